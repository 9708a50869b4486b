#!/usr/bin/env bash
# Every build and test of the project, as CI runs them:
#   0. builds: debug with tests, release (every product), release with tests, Benchmarks/ in
#      release, debug with tests under TSan and under ASan; any build failure stops here with a nonzero status;
#   1. the host tier (ABI goldens, argument checks on the kernel model, page-table formats,
#      capability decoding) with `swift test`, in debug and again in release, where optimiser
#      bugs show, then under ThreadSanitizer and AddressSanitizer (debug, own scratch paths);
#   2. the kernel tier inside a VM running a real 7.x kernel with iommufd, an emulated Intel
#      VT-d and two edu DMA devices (or directly, where this machine has /dev/iommu);
#   3. the self-test of the VM harness (Harness/selftest.sh);
#   4. a bounded fuzz run of every page-table walker and of the mirror engine on the kernel model.
# Ends with one line 'N passed, N failed, N skipped' and a nonzero status if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."
results=.build/test-results
rm -rf "$results"; mkdir -p "$results"
status=0
step() { printf '\n== %s\n' "$*"; }

step "setup: packages and the test kernel"
Harness/apt-setup.sh || exit 1
kernel=$(Harness/build-kernel.sh | tail -1) || exit 1
echo "kernel: $(cat "$(dirname "$kernel")/version")"

# build ARGS...: `swift build ARGS`, its progress lines dropped; a failure ends CI here.
build() {
  step "build: swift build $*"
  swift build "$@" 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "build failed: swift build $*"; exit 1; }
}
build --build-tests
build -c release
# The host tier's @testable imports need -enable-testing, which would rebuild .build/release
# on every switch between the two; this build keeps its own scratch path.
release_tests=(-c release --scratch-path .build-release)
build "${release_tests[@]}" --build-tests -Xswiftc -enable-testing
build -c release --package-path Benchmarks
# The host tier under ThreadSanitizer and AddressSanitizer, each in its own scratch path.
sanitizers=(thread address)
scratch() { [ "$1" = thread ] && echo .build-tsan || echo .build-asan; }
for s in "${sanitizers[@]}"; do
  build --build-tests --sanitize="$s" --scratch-path "$(scratch "$s")"
done

# The xUnit files are named by tier: swift test writes NAME-swift-testing.xml for NAME.xml
# (with --disable-xctest, as the sanitizer tiers run, NAME.xml itself).
for config in debug release; do
  step "host tier, $config"
  args=(); [ "$config" = release ] && args=("${release_tests[@]}")
  SWIFT_IOMMUFD_REQUIRE_ABI_CHECK=1 swift test "${args[@]}" --skip-build --skip KernelTests \
    --xunit-output "$results/host-$config.xml" || status=1
done

# Sanitizer tiers: every report in the project's code is a failure. Two tests stay in the debug
# and release tiers above only: defaultBudgetBoundsAHostileWalk (a walk bounded only by the
# default budget: minutes under TSan) and VMTests (it boots the VM and runs the built iommuctl
# there, where a sanitizer's runtime does not start: SIGILL; no sanitizer report involved).
# --disable-xctest: every test here is swift-testing. LeakSanitizer reports leaks inside the
# toolchain's Foundation and XCTest (Harness/lsan-toolchain.supp names those libraries only).
# ThreadSanitizer skips IOPageTableTests too: single-threaded code (ASan and the fuzzers cover
# it), and two thirds of the TSan tier's time.
for s in "${sanitizers[@]}"; do
  name=$(scratch "$s"); name=${name#.build-}
  extra=(); [ "$s" = thread ] && extra=(--skip IOPageTableTests)
  step "host tier, $s sanitizer"
  TSAN_OPTIONS=halt_on_error=1 ASAN_OPTIONS=halt_on_error=1 LSAN_OPTIONS=suppressions=Harness/lsan-toolchain.supp \
    SWIFT_IOMMUFD_REQUIRE_ABI_CHECK=1 \
    swift test --scratch-path ".build-$name" --sanitize="$s" --skip-build --disable-xctest --skip KernelTests \
    --skip defaultBudgetBoundsAHostileWalk --skip VMTests "${extra[@]}" --xunit-output "$results/host-$name.xml" || status=1
done

step "kernel tier"
bundle=.build/debug/swift-iommufdPackageTests.xctest
# This machine itself can run the kernel tier only if it has what the VM has: iommufd, the
# kernel's mock IOMMU, and an edu device bound to vfio-pci.
edu_on_vfio() { grep -lqs 0x11e8 /sys/bus/pci/drivers/vfio-pci/*/device; }
# Two passes: every kernel suite but the fault-injection sweeps (in parallel), then the sweeps
# alone, as the kernel's own iommufd_fail_nth runs: while the sweeps inject allocation failures
# into the mock IOMMU's device and group creation, no other test creates or tears down mock
# devices and groups (kernel-global state) beside them.
kernel_passes() {  # OUT_DIR: both passes, writing OUT_DIR/kernel.xml and OUT_DIR/kernel-faults.xml
  local s=0
  "$bundle" --testing-library swift-testing --filter KernelTests --skip FaultInjectionKernelTests \
    --xunit-output "$1/kernel.xml" || s=1
  "$bundle" --testing-library swift-testing --filter FaultInjectionKernelTests \
    --xunit-output "$1/kernel-faults.xml" || s=1
  return $s
}
mkdir -p "$results/vm"
if [ -e /dev/iommu ] && [ -e /sys/class/iommu/iommufd_selftest_iommu.0 ] && edu_on_vfio; then
  SWIFT_IOMMUFD_REQUIRE_KERNEL=1 kernel_passes "$results/vm" || status=1
else
  # The VM runs the same two passes (the command is read by the VM's /bin/sh).
  SWIFT_IOMMUFD_REQUIRE_KERNEL=1 HIL_KERNEL=$kernel HIL_OUT=$results/vm Harness/run-in-vm.sh --timeout 900 -- sh -c '
    s=0
    "$1" --testing-library swift-testing --filter KernelTests --skip FaultInjectionKernelTests --xunit-output /tmp/hil/kernel.xml || s=1
    "$1" --testing-library swift-testing --filter FaultInjectionKernelTests --xunit-output /tmp/hil/kernel-faults.xml || s=1
    exit $s' sh "$bundle" || status=1
fi
cp "$results/vm/kernel.xml" "$results/kernel-swift-testing.xml" 2>/dev/null
cp "$results/vm/kernel-faults.xml" "$results/kernel-faults-swift-testing.xml" 2>/dev/null

step "harness self-test: quoting, status and clean-up of run-in-vm.sh"
HIL_KERNEL=$kernel Harness/selftest.sh --xunit "$results/harness-selftest.xml" || status=1

tiers=("$results/host-debug-swift-testing.xml" "$results/host-release-swift-testing.xml"
  "$results/host-tsan.xml" "$results/host-asan.xml"
  "$results/kernel-swift-testing.xml" "$results/kernel-faults-swift-testing.xml" "$results/harness-selftest.xml")
if [ -x Fuzz/run.sh ]; then
  step "fuzz: every page-table walker and the mirror engine, bounded"
  Fuzz/run.sh "${FUZZ_SECONDS:-10}" --xunit "$results/fuzz.xml" || status=1
  tiers+=("$results/fuzz.xml")
fi

step "summary"
python3 Harness/summarize.py "${tiers[@]}" || status=1
exit $status
