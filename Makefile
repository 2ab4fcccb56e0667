# ferry: the two commands users need are `make demo` and `make check`.
# Both install what is missing first (scripts/setup, Debian packages, as root).

BUILD      ?= build
ASAN_BUILD ?= build-asan
MESON_OPTS ?=

.PHONY: all setup demo check bench clean format

all: setup $(BUILD)/build.ninja
	ninja -C $(BUILD)

setup:
	@scripts/setup

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined $(MESON_OPTS)

# VMM=qemu: a real QEMU guest (the test guest) instead of ferry-vmm.
VMM        ?= sim

demo: all
	scripts/demo $(BUILD) $(VMM)

# Every test (unit, integration against real virsh / python3-libvirt) runs
# against the sanitizer build, so a leak or an overflow fails the run.
check: setup $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	scripts/run-tests $(ASAN_BUILD)

bench: all
	bench/run $(BUILD)

format:
	clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'bench/*.c')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
