# ferry: the two commands users need are `make demo` and `make check`.
# Both install what is missing first (scripts/setup, Debian packages, as root).

BUILD      ?= build
ASAN_BUILD ?= build-asan
DEB_BUILD  ?= build-deb
MESON_OPTS ?=

.PHONY: all setup demo check bench deb deb-check clean format

all: setup $(BUILD)/build.ninja
	ninja -C $(BUILD)

setup:
	@scripts/setup

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined $(MESON_OPTS)

demo: all
	scripts/demo $(BUILD)

# Every test (unit, integration against real virsh / python3-libvirt) runs
# against the sanitizer build, so a leak or an overflow fails the run.
check: setup $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	scripts/run-tests $(ASAN_BUILD)

bench: all
	bench/run $(BUILD)

# The Debian package (debian/), built in a copy of the tree under
# $(DEB_BUILD) and checked by lintian; deb-check installs it on a fresh Debian
# 12 in a container and runs a migration with it (docs/testing.md says why
# these are not part of make check).
deb: setup
	@scripts/setup --deb
	scripts/build-deb $(DEB_BUILD)

deb-check: deb
	tests/package/deb-check $(DEB_BUILD)/ferry_*.deb $(DEB_BUILD)

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'bench/*.c')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(DEB_BUILD)
