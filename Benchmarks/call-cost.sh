#!/usr/bin/env bash
# The cost of one typed map and unmap call, with a C floor in the same run.
#
#   Benchmarks/call-cost.sh [CALLS]       on this machine: allocations per call on the kernel
#                                         model, and instructions per call of the typed calls
#                                         and the C floor with the ioctl stubbed out (callgrind)
#   Benchmarks/call-cost.sh vm [ROUNDS]   in the test VM (Harness/run-in-vm.sh, Linux 7.3 under
#                                         TCG): Swift and C in turn on one IOAS, per-call times
#                                         without and with a mock-IOMMU domain, then the
#                                         user-space instructions of real calls (callgrind)
#
# Builds CallCost with a plain `swift build -c release`. Instruction counts are per call and
# include the loop around the call ("swift loop only" shows that part). With BENCH_JSON=FILE,
# every figure is also appended to FILE as a line of JSON (see Benchmarks/README.md). valgrind 3.19 cannot
# read this toolchain's DWARF 5, so callgrind runs a copy without debug info.
set -euo pipefail
cd "$(dirname "$0")"
swift build -c release --product CallCost 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
bin=.build/release/CallCost
objcopy --strip-debug "$bin" .build/CallCost.stripped

# Each callgrind client-request dump is a part file naming its region ("swift map n=100000").
per_call() {
  for f in $(ls -v "$@"); do
    awk '/^desc: Trigger: Client Request: / { sub(/^desc: Trigger: Client Request: /, ""); name = $0 }
         /^(summary|totals): / { total = $2 }
         END { if (name != "") { split(name, p, " n="); printf "    %-34s %8.1f\n", p[1] ":", total / p[2] } }' "$f"
  done
}

# With BENCH_JSON set: one JSON record a region (per_call's lines on standard input), each Swift
# region beside the C region of the same name as its floor.
json_records() {
  [ -n "${BENCH_JSON:-}" ] || { cat > /dev/null; return 0; }
  awk -v where="$1" '
    { line = $0; sub(/^ +/, "", line); i = index(line, ":"); name = substr(line, 1, i - 1); val[name] = substr(line, i + 1) + 0; order[++k] = name }
    END {
      for (j = 1; j <= k; j++) {
        name = order[j]; c = name; sub(/swift /, "c ", c)
        if (name ~ /(^| )c / ) continue
        if (c != name && (c in val)) {
          printf "{\"suite\": \"CallCost instructions\", \"case\": \"%s\", \"value\": %s, \"unit\": \"instructions/call\", \"baseline\": \"%s (C floor)\", \"baselineValue\": %s, \"ratio\": %s, \"where\": \"%s\"}\n", name, val[name], c, val[c], (val[c] > 0 ? val[name] / val[c] : "null"), where
        } else {
          printf "{\"suite\": \"CallCost instructions\", \"case\": \"%s\", \"value\": %s, \"unit\": \"instructions/call\", \"baseline\": null, \"baselineValue\": null, \"ratio\": null, \"where\": \"%s\"}\n", name, val[name], where
        }
      }
    }' >> "$BENCH_JSON"
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ "${1:-}" = vm ]; then
  rounds=${2:-40}
  kernel=${HIL_KERNEL:-$(../Harness/build-kernel.sh | tail -1)}
  HIL_KERNEL=$kernel HIL_OUT=$out ../Harness/run-in-vm.sh -- /bin/sh -c \
    "$bin kernel $rounds && valgrind --tool=callgrind --callgrind-out-file=/tmp/hil/cg.out .build/CallCost.stripped kernel 10000 > /dev/null 2> /tmp/hil/valgrind.log"
  echo "user-space instructions per real call (callgrind in the VM, 10000 calls per region, no domain):"
  counts=$(per_call "$out"/cg.out.*)
  echo "$counts"
  echo "$counts" | json_records vm
else
  n=${1:-100000}
  "$bin" model
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" .build/CallCost.stripped stub "$n" > "$out/stdout" 2> "$out/stderr" \
    || { cat "$out/stderr"; exit 1; }
  echo "instructions per call (callgrind, ioctl stubbed out, $n calls per region):"
  counts=$(per_call "$out"/cg.out.*)
  echo "$counts"
  echo "$counts" | json_records host
fi
