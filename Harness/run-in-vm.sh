#!/usr/bin/env bash
# Runs a command inside a VM with a real iommufd kernel, an emulated Intel VT-d IOMMU and two
# QEMU edu DMA devices (one on NUMA node 1 behind its own host bridge), and exits with the
# command's status. The VM sees the host's filesystem read-only at the same paths (virtio-9p),
# so binaries built here run unchanged; the working directory is the same (also under /tmp);
# /tmp, /run, /dev, /proc and /sys are the VM's own.
#
#   Harness/run-in-vm.sh [--timeout SECONDS] [--kvm] [--scalable] [--memory MiB] [--append ARGS] [--cpu MODEL] -- COMMAND...
#
# --append adds kernel command-line arguments after the harness's own (e.g. "hugepagesz=1G
# hugepages=1" to reserve a 1 GiB page; give the VM --memory for it). --cpu gives QEMU a CPU
# model (default: QEMU's own under TCG, the host's with --kvm); QEMU's default TCG model has no
# 1 GiB pages, so a 1 GiB page needs e.g. --cpu qemu64,+pdpe1gb.
#
# Environment: HIL_KERNEL=path/to/bzImage to skip the kernel build; HIL_OUT=dir to keep the
# work share (files the command writes to /tmp/hil come back there).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
timeout=900 accel=tcg scalable="" memory=2048 append="" cpu=""
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout=$2; shift 2 ;;
    --kvm) accel=kvm; shift ;;
    --scalable) scalable=",x-scalable-mode=on,x-flts=on"; shift ;;
    --memory) memory=$2; shift 2 ;;
    --append) append=" $2"; shift 2 ;;
    --cpu) cpu=$2; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--timeout S] [--kvm] [--scalable] [--memory MiB] [--append ARGS] [--cpu MODEL] -- COMMAND..." >&2; exit 2; }

kernel=${HIL_KERNEL:-$("$here/build-kernel.sh" | tail -1)}
cache=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/swift-iommufd

# The initramfs: busybox and our init, nothing else (cached by content).
busybox=$(command -v busybox || echo /bin/busybox)
ikey=$( (cat "$here/init" "$busybox") | sha256sum | cut -c1-16)
initrd=$cache/initrd/$ikey.gz
if [ ! -f "$initrd" ]; then
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,proc,sys,dev,host}
  cp "$busybox" "$root/bin/busybox"
  cp "$here/init" "$root/init"; chmod +x "$root/init"
  mkdir -p "$(dirname "$initrd")"
  tmp=$(mktemp "$initrd.XXXXXX")
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp" && mv "$tmp" "$initrd"
  rm -rf "$root"
fi

work=${HIL_OUT:-$(mktemp -d)}
# A work folder of our own goes on every exit, the timeout and no-boot ones included.
[ -n "${HIL_OUT:-}" ] || trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP
mkdir -p "$work"; rm -f "$work/up" "$work/status"
printf '%s\n' "$PWD" > "$work/cwd"

# The VM reads env and command with the host's /bin/sh (dash on Debian), which knows no
# bash quoting ($'...' from printf %q). Single quotes are POSIX: 'it'\''s' is it's.
shq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{ printf 'export HIL_CWD=%s\n' "$(shq "$PWD")"
  printf 'export PATH=%s HOME=/tmp TMPDIR=/tmp HIL_VM=1\n' "$(shq "$PATH")"
  for name in $(compgen -e | grep -E '^(SWIFT_IOMMUFD_[A-Z_]+|TERM)$'); do
    printf 'export %s=%s\n' "$name" "$(shq "${!name}")"
  done
} > "$work/env"
for arg in "$@"; do shq "$arg"; printf ' '; done > "$work/command"; echo >> "$work/command"

mem_half=$((memory / 2))
qemu=(qemu-system-x86_64 -accel "$accel" -smp 2 -m "${memory}M" -nographic -no-reboot
  -machine q35,kernel-irqchip=split -device "intel-iommu,intremap=on${scalable}"
  -object "memory-backend-ram,id=m0,size=${mem_half}M" -numa node,nodeid=0,cpus=0,memdev=m0
  -object "memory-backend-ram,id=m1,size=$((memory - mem_half))M" -numa node,nodeid=1,cpus=1,memdev=m1
  -device edu,bus=pcie.0,addr=0x5
  -device pxb-pcie,id=pxb1,bus_nr=0x80,numa_node=1,bus=pcie.0
  -device pcie-root-port,id=rp1,bus=pxb1,chassis=1 -device edu,bus=rp1
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,bus=pcie.0
  -fsdev "local,id=work,path=$work,security_model=none"
  -device virtio-9p-pci,fsdev=work,mount_tag=work,bus=pcie.0
  -nic none -kernel "$kernel" -initrd "$initrd"
  -append "console=ttyS0 intel_iommu=on quiet panic=-1 hugepages=64 rdinit=/init no_timer_check${append}")
# no_timer_check: the kernel's boot test of the IO-APIC timer counts ticks over a busy-wait;
# under TCG on a loaded host the ticks come late and it panics ("timer doesn't work through
# Interrupt-remapped IO-APIC"). QEMU's timer is known good, so skip the test.
if [ -n "$cpu" ]; then qemu+=(-cpu "$cpu"); elif [ "$accel" = kvm ]; then qemu+=(-cpu host); fi

# A TCG boot takes seconds; on a loaded host one has been seen to hang before init ran, with
# nothing on the console. A boot that has not reached init within boot_limit seconds is
# stopped and tried once more (the command had not started, so running it then is safe).
boot_limit=${HIL_BOOT_TIMEOUT:-120}
start=$(date +%s)
for attempt in 1 2; do
  rm -f "$work/up" "$work/status"
  set +e
  timeout --foreground "$timeout" "${qemu[@]}" < /dev/null &
  qpid=$!
  booted=$(date +%s)
  while kill -0 "$qpid" 2>/dev/null && [ ! -f "$work/up" ]; do
    if [ $(( $(date +%s) - booted )) -ge "$boot_limit" ] && [ "$timeout" -gt "$boot_limit" ]; then
      kill "$qpid" 2>/dev/null
      break
    fi
    sleep 1
  done
  wait "$qpid"
  qrc=$?
  set -e
  [ -f "$work/up" ] || [ "$attempt" = 2 ] || [ "$timeout" -le "$boot_limit" ] && break
  echo "run-in-vm: the VM did not reach init within ${boot_limit} s; booting it again" >&2
done
if [ ! -f "$work/up" ]; then
  echo "run-in-vm: the VM did not come up (qemu exit $qrc after $(( $(date +%s) - start )) s)" >&2
  exit 125
fi
if [ ! -f "$work/status" ]; then
  echo "run-in-vm: the command did not finish within ${timeout} s (qemu exit $qrc)" >&2
  exit 124
fi
rc=$(cat "$work/status")
echo "run-in-vm: command exited $rc after $(( $(date +%s) - start )) s in the VM" >&2
exit "$rc"
