#!/usr/bin/env bash
# Every test of the project, as CI runs them:
#   1. the host tier (ABI goldens, argument checks on the kernel model, page-table formats,
#      capability decoding) with `swift test`;
#   2. the kernel tier inside a VM running a real 7.x kernel with iommufd, an emulated Intel
#      VT-d and two edu DMA devices (or directly, where this machine has /dev/iommu);
#   3. a bounded fuzz run of every page-table walker.
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

step "build"
swift build --build-tests 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "build failed"; exit 1; }

step "host tier"
SWIFT_IOMMUFD_REQUIRE_ABI_CHECK=1 swift test --skip-build --skip KernelTests \
  --xunit-output "$results/host.xml" || status=1

step "kernel tier"
bundle=.build/debug/swift-iommufdPackageTests.xctest
# This machine itself can run the kernel tier only if it has what the VM has: iommufd, the
# kernel's mock IOMMU, and an edu device bound to vfio-pci.
edu_on_vfio() { grep -lqs 0x11e8 /sys/bus/pci/drivers/vfio-pci/*/device; }
if [ -e /dev/iommu ] && [ -e /sys/class/iommu/iommufd_selftest_iommu.0 ] && edu_on_vfio; then
  SWIFT_IOMMUFD_REQUIRE_KERNEL=1 "$bundle" --testing-library swift-testing --filter KernelTests \
    --xunit-output "$results/kernel-swift-testing.xml" || status=1
else
  mkdir -p "$results/vm"
  SWIFT_IOMMUFD_REQUIRE_KERNEL=1 HIL_KERNEL=$kernel HIL_OUT=$results/vm Harness/run-in-vm.sh --timeout 900 -- \
    "$bundle" --testing-library swift-testing --filter KernelTests --xunit-output /tmp/hil/kernel.xml || status=1
  cp "$results/vm/kernel.xml" "$results/kernel-swift-testing.xml" 2>/dev/null
fi

tiers=("$results/host-swift-testing.xml" "$results/kernel-swift-testing.xml")
if [ -x Fuzz/run.sh ]; then
  step "fuzz: every page-table walker, bounded"
  Fuzz/run.sh "${FUZZ_SECONDS:-10}" --xunit "$results/fuzz.xml" || status=1
  tiers+=("$results/fuzz.xml")
fi

step "summary"
python3 Harness/summarize.py "${tiers[@]}" || status=1
exit $status
