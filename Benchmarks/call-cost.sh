#!/usr/bin/env bash
# Allocations per call on the kernel model, and instructions per call of the typed map and
# unmap against a C floor (the ioctl stubbed out), counted by callgrind.
#
#   Benchmarks/call-cost.sh [ITERATIONS]     (default 100000 calls per region)
#
# Builds CallCost with a plain `swift build -c release`. Instruction counts are per call and
# include the loop around the call (the "swift loop only" region shows that part).
set -euo pipefail
cd "$(dirname "$0")"
n=${1:-100000}
swift build -c release --product CallCost 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
bin=.build/release/CallCost
"$bin" model
out=$(mktemp -d)
# valgrind 3.19 cannot read the DWARF 5 this toolchain writes: run a copy without debug info.
objcopy --strip-debug "$bin" "$out/CallCost"
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$out/CallCost" stub "$n" > "$out/stdout" 2> "$out/stderr" \
  || { cat "$out/stderr"; exit 1; }
echo "instructions per call (callgrind, ioctl stubbed out, $n calls per region):"
# Each client-request dump is a part file naming its region ("swift map n=100000") and its total.
for f in $(ls -v "$out"/cg.out.*); do
  awk '/^desc: Trigger: Client Request: / { sub(/^desc: Trigger: Client Request: /, ""); name = $0 }
       /^(summary|totals): / { total = $2 }
       END { if (name != "") { split(name, p, " n="); printf "    %-34s %8.1f\n", p[1] ":", total / p[2] } }' "$f"
done
rm -rf "$out"
