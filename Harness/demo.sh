#!/usr/bin/env bash
# The main job, `iommuctl mirror`: builds the tool and runs it where a real iommufd and a DMA
# device are: on this machine when it has /dev/iommu and edu devices bound to vfio-pci,
# otherwise inside the test VM (a real 7.x kernel, an emulated Intel VT-d, two edu devices; see
# Harness/run-in-vm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
Harness/apt-setup.sh >/dev/null
swift build --product iommuctl 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "demo: build failed"; exit 1; }
iommuctl=$(swift build --show-bin-path)/iommuctl
if [ -e /dev/iommu ] && grep -lqs 0x11e8 /sys/bus/pci/drivers/vfio-pci/*/device; then
  exec "$iommuctl" mirror
fi
echo "demo: no /dev/iommu here; running inside the test VM"
exec Harness/run-in-vm.sh --timeout 300 -- "$iommuctl" mirror
