# ferry: the two commands users need are `make demo` and `make check`.
# Both install what is missing first (scripts/setup, Debian packages, as root).

BUILD      ?= build
ASAN_BUILD ?= build-asan
DEB_BUILD  ?= build-deb
FUZZ_BUILD ?= build-fuzz
MESON_OPTS ?=
# make fuzz: seconds per harness.
FUZZ_SECONDS ?= 60

.PHONY: all setup demo check faults bench fuzz soak deb deb-check clean format

all: setup $(BUILD)/build.ninja
	ninja -C $(BUILD)

setup:
	@scripts/setup

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=debugoptimized $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) --buildtype=debug -Db_sanitize=address,undefined $(MESON_OPTS)

# libFuzzer harnesses (tests/fuzz): clang, coverage instrumentation, ASan+UBSan.
# Warnings stay fatal in the gcc builds; clang's own extra ones do not stop it.
$(FUZZ_BUILD)/build.ninja:
	CC=clang-14 meson setup $(FUZZ_BUILD) --buildtype=debugoptimized -Dfuzzing=true \
	  -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=false $(MESON_OPTS)

# VMM=qemu: a real QEMU guest (the test guest) instead of ferry-vmm.
VMM        ?= sim

demo: all
	scripts/demo $(BUILD) $(VMM)

# Every test (unit, integration against real virsh / python3-libvirt) runs
# against the sanitizer build, so a leak or an overflow fails the run; the
# fuzz-* tests run each harness of the fuzzing build a fixed number of times.
check: setup $(ASAN_BUILD)/build.ninja $(FUZZ_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	ninja -C $(FUZZ_BUILD)
	FERRY_FUZZ_BUILD_DIR=$(abspath $(FUZZ_BUILD)) scripts/run-tests $(ASAN_BUILD)

# The whole fault matrix (tests/integration/test_faults.py; make check runs
# its representative subset): every case in tunnelled and proxy mode.
faults: setup $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	FERRY_FAULTS=all FERRY_BUILD_DIR=$(abspath $(ASAN_BUILD)) \
	  /usr/bin/python3 tests/integration/test_faults.py --jobs=8

# Each harness for FUZZ_SECONDS from the seed corpus plus what earlier runs
# found ($(FUZZ_BUILD)/fuzz-corpus); ends with executions per harness.
fuzz: setup $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD)
	FERRY_FUZZ_BUILD_DIR=$(abspath $(FUZZ_BUILD)) scripts/run-fuzz --seconds $(FUZZ_SECONDS)

bench: all
	scripts/setup bench
	bench/run $(BUILD)

# Concurrency soak (bench/soak.py): 1000 clients while 8 VMs migrate back and
# forth between two ferryd, tunnelled and proxied; prints its table.
soak: all
	/usr/bin/python3 bench/soak.py $(BUILD)

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
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(DEB_BUILD)
