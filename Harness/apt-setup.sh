#!/usr/bin/env bash
# Adds bookworm-backports and trixie-backports (pinned at priority 100) using the mirror
# URI already configured on this machine, then installs what the build and the VM need.
# Idempotent: a second run only checks that the packages are there.
set -euo pipefail

need=(linux-libc-dev qemu-system-x86 flex bison bc libelf-dev cpio busybox-static libnuma-dev
      libssl-dev xz-utils make gcc)
src=/etc/apt/sources.list.d/debian.sources
extra=/etc/apt/sources.list.d/swift-iommufd-backports.sources
pin=/etc/apt/preferences.d/swift-iommufd-backports

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The mirror this machine already uses: from deb822 sources, else from a one-line sources.list.
mirror_uri() {
  if [ -f "$src" ]; then awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$src"; fi
  if [ -f /etc/apt/sources.list ]; then
    awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list
  fi
}
if [ ! -f "$extra" ]; then
  uri=$(mirror_uri | head -1)
  keyring=$( [ -f "$src" ] && awk '/^Signed-By:/ {print $2; exit}' "$src" || true)
  [ -n "$uri" ] || { echo "apt-setup: no Debian mirror found in $src or /etc/apt/sources.list" >&2; exit 1; }
  { printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports trixie-backports\nComponents: main\n' "$uri"
    [ -z "$keyring" ] || printf 'Signed-By: %s\n' "$keyring"
  } | sudo_ tee "$extra" >/dev/null
  printf 'Package: *\nPin: release a=bookworm-backports\nPin-Priority: 100\n\nPackage: *\nPin: release a=trixie-backports\nPin-Priority: 100\n' \
    | sudo_ tee "$pin" >/dev/null
fi
# (Re)read the package lists until the backports suites are known (a failed update is retried).
if ! ls /var/lib/apt/lists/*trixie-backports*Packages* >/dev/null 2>&1; then
  sudo_ apt-get update -qq
fi

export DEBIAN_FRONTEND=noninteractive
have_new_headers() { [ -f /usr/include/linux/iommufd.h ] && grep -q IOMMU_HW_QUEUE_ALLOC /usr/include/linux/iommufd.h; }
if ! have_new_headers; then
  sudo_ apt-get install -y -qq -t trixie-backports linux-libc-dev >/dev/null
fi
if ! command -v qemu-system-x86_64 >/dev/null || ! qemu-system-x86_64 -device help 2>/dev/null | grep -q '"edu"'; then
  sudo_ apt-get install -y -qq -t bookworm-backports qemu-system-x86 >/dev/null
fi
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] || sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
echo "apt-setup: linux-libc-dev $(dpkg-query -W -f='${Version}' linux-libc-dev), $(qemu-system-x86_64 --version | head -1)"
