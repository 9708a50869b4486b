#!/usr/bin/env bash
# Checks of Harness/run-in-vm.sh itself, which the Swift suite cannot test: arguments and
# environment reach the VM's command unchanged (the VM's /bin/sh is dash, not bash), the
# command's status comes back, and the work folder is removed on the no-boot (125) and
# timeout (124) exits too, and a boot that hangs is tried once more. Four VM boots, two of
# them stopped after a second.
#   Harness/selftest.sh [--xunit FILE]
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
xunit=""; [ "${1:-}" = --xunit ] && xunit=$(realpath -m "$2")
export HIL_KERNEL=${HIL_KERNEL:-$("$here/build-kernel.sh" | tail -1)}
unset HIL_OUT
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cases="" failed=0

# check NAME COMMAND...: one test case, passed when COMMAND succeeds.
check() {
  local name=$1; shift
  if "$@"; then
    echo "ok   $name"; cases+="<testcase classname=\"Harness.selftest\" name=\"$name\"/>"
  else
    echo "FAIL $name"; failed=1
    cases+="<testcase classname=\"Harness.selftest\" name=\"$name\"><failure message=\"see the log\"/></testcase>"
  fi
}
# Only the VM's own files may be left in a private TMPDIR: none, once run-in-vm.sh is done.
empty() { [ -z "$(ls -A "$1")" ] || { ls -la "$1"; false; }; }

# 1. Arguments, environment and working directory with spaces, quotes, $, a tab, a glob; and
# the status. One boot; its length sizes the timeout of case 3.
args=("a b" "it's" '"dq"' '$HOME' '*' $'tab\there' '\x' "" "-n")
mkdir -p "$scratch/out" "$scratch/it's a dir"
start=$SECONDS
(cd "$scratch/it's a dir" && HIL_OUT=$scratch/out SWIFT_IOMMUFD_SELFTEST="it's \$HOME" "$here/run-in-vm.sh" \
  --timeout 300 -- /bin/sh -c \
  'printf "[%s]\n" "$@" > /tmp/hil/args; printf "%s" "$SWIFT_IOMMUFD_SELFTEST" > /tmp/hil/env-value; pwd > /tmp/hil/pwd; exit 3' \
  sh "${args[@]}")
rc=$?
boot=$((SECONDS - start))
check "arguments arrive unchanged" diff <(printf '[%s]\n' "${args[@]}") "$scratch/out/args"
check "environment arrives unchanged" diff <(printf '%s' "it's \$HOME") "$scratch/out/env-value"
check "working directory is kept" diff <(echo "$scratch/it's a dir") "$scratch/out/pwd"
check "the command's status comes back" [ "$rc" -eq 3 ]

# 2. A timeout before the VM is up (TCG takes seconds to boot): 125, no work folder left.
mkdir -p "$scratch/t1"
TMPDIR=$scratch/t1 "$here/run-in-vm.sh" --timeout 1 -- sleep 60 2>/dev/null
rc=$?
check "no boot within the timeout exits 125" [ "$rc" -eq 125 ]
check "no work folder left after exit 125" empty "$scratch/t1"

# 3. A boot that does not reach init within HIL_BOOT_TIMEOUT is stopped and tried once more;
#    when the second one does not either: 125, no work folder, no QEMU left running.
mkdir -p "$scratch/t3"
HIL_BOOT_TIMEOUT=1 TMPDIR=$scratch/t3 "$here/run-in-vm.sh" --timeout 60 -- true 2> "$scratch/t3.err"
rc=$?
check "a hung boot is tried again, then exits 125" [ "$rc" -eq 125 ]
check "the second boot is announced" grep -q "booting it again" "$scratch/t3.err"
check "no work folder left after the retried boot" empty "$scratch/t3"

# 4. A command that outlives the timeout, with room for a boot twice as slow as case 1's.
mkdir -p "$scratch/t2"
TMPDIR=$scratch/t2 "$here/run-in-vm.sh" --timeout $((2 * boot + 5)) -- sleep 600 2>/dev/null
rc=$?
check "a command past the timeout exits 124" [ "$rc" -eq 124 ]
check "no work folder left after exit 124" empty "$scratch/t2"

if [ -n "$xunit" ]; then
  printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="Harness.selftest">%s</testsuite></testsuites>\n' \
    "$cases" > "$xunit"
fi
exit "$failed"
