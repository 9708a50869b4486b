#!/usr/bin/env bash
# Builds (or reuses) the test kernel: the newest linux-source-7.x Debian offers, tinyconfig plus
# Harness/kernel.config. The image is cached under
#   ${XDG_CACHE_HOME:-~/.cache}/swift-iommufd/kernel/<hash of source version, fragment, recipe>/
# Prints the path of bzImage on the last line of stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/swift-iommufd
jobs=${JOBS:-$(nproc)}
log() { echo "build-kernel: $*" >&2; }

# Newest linux-source-7.x, else the newest linux-source-* (checked for IOMMUFD below).
pick_source() {
  local all
  all=$(apt-cache search --names-only '^linux-source-[0-9]+\.[0-9]+$' | awk '{print $1}' | sort -V)
  local seven; seven=$(echo "$all" | grep '^linux-source-7\.' | tail -1 || true)
  if [ -n "$seven" ]; then echo "$seven"; else
    log "no linux-source-7.x offered; falling back to $(echo "$all" | tail -1)"; echo "$all" | tail -1; fi
}
pkg=$(pick_source)
[ -n "$pkg" ] || { log "no linux-source package is offered by apt"; exit 1; }
ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
# Bump when the build steps below change what gets built; edits that do not, do not rebuild.
recipe=1
key=$(printf '%s\n%s\n' "$pkg=$ver recipe=$recipe" "$(cat "$here/kernel.config")" | sha256sum | cut -c1-16)
out=$cache/kernel/$key
if [ -f "$out/bzImage" ]; then
  log "reusing $out/bzImage ($(cat "$out/version"))"; echo "$out/bzImage"; exit 0
fi

src=$cache/src/$pkg-$ver
if [ ! -f "$src/.extracted" ]; then
  log "fetching $pkg $ver"
  rm -rf "$src"; mkdir -p "$src/deb"
  (cd "$src/deb" && apt-get download -q "$pkg=$ver" >&2)
  dpkg -x "$src"/deb/*.deb "$src/deb/x"
  log "unpacking the kernel tree"
  tar -xf "$src"/deb/x/usr/src/linux-source-*.tar.xz -C "$src"
  rm -rf "$src/deb"
  touch "$src/.extracted"
fi
tree=$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*' | head -1)
grep -q 'config IOMMUFD$' "$tree/drivers/iommu/iommufd/Kconfig" || { log "$pkg has no CONFIG_IOMMUFD"; exit 1; }

build=$cache/build/$key
mkdir -p "$build"
log "configuring in $build"
make -s -C "$tree" O="$build" tinyconfig >&2
"$tree/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$here/kernel.config" >/dev/null
make -s -C "$tree" O="$build" olddefconfig >&2
missing=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$here/kernel.config" | while IFS= read -r line; do
  grep -qxF "$line" "$build/.config" || echo "$line"; done)
[ -z "$missing" ] || { log "options that did not survive olddefconfig:"; echo "$missing" >&2; exit 1; }

log "building bzImage with $jobs jobs (about 5-10 minutes on 2 cores)"
start=$(date +%s)
if [ -t 2 ]; then make -C "$tree" O="$build" -j"$jobs" bzImage 2>&1 | while IFS= read -r l; do printf '\r\033[K%.100s' "$l" >&2; done; echo >&2
else make -s -C "$tree" O="$build" -j"$jobs" bzImage >&2; fi
[ -f "$build/arch/x86/boot/bzImage" ] || { log "kernel build failed"; exit 1; }
mkdir -p "$out"
tmp=$(mktemp "$out/bzImage.XXXXXX")
cp "$build/arch/x86/boot/bzImage" "$tmp" && mv "$tmp" "$out/bzImage"
cp "$build/.config" "$out/config"
echo "$pkg $ver ($(make -s -C "$tree" O="$build" kernelrelease))" > "$out/version"
rm -rf "$build"
log "built $(cat "$out/version") in $(( $(date +%s) - start )) s"
echo "$out/bzImage"
