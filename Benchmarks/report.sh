#!/usr/bin/env bash
# Runs the benchmark suite, on this machine and in the test VM, and writes docs/benchmarks.md
# with its SVG plots (docs/benchmarks/).
#
#   Benchmarks/report.sh [--quick] [--out DIR] [--keep DIR]
#
# --out: where benchmarks.md and benchmarks/ go (default docs/); --keep: keep the run's raw
# records and logs in DIR (report/report.py DIR OUT rewrites the doc from them).
#
# Host: CallCost (allocations on the model; instructions per call under callgrind, through
# call-cost.sh), WalkBenchmark, MirrorBenchmark table, host, allocs and scaling. VM (one boot of
# Harness/run-in-vm.sh, 4 GiB, "hugepagesz=1G hugepages=1" appended and a CPU model with 1 GiB
# pages, qemu64,+pdpe1gb, for 1 GiB pages): CallCost
# kernel (one 4 KiB page, call by call) and suite (pages of three sizes, churn, IOAS_COPY),
# MirrorBenchmark kernel and `iommuctl bench --json`. Every binary appends its measurements to
# one file named by BENCH_JSON; Benchmarks/report/report.py turns them into the doc, with no
# figure of its own. --quick: smaller counts (minutes instead of tens of minutes on 2 cores).
# Matplotlib comes from a venv under the user's cache (made on first use, from PyPI).
# Environment: HIL_KERNEL as for run-in-vm.sh; REPORT_PYTHON to use another python with matplotlib.
set -euo pipefail
cd "$(dirname "$0")"
mode=full out=../docs keep=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick; shift ;;
    --out) out=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "usage: $0 [--quick] [--out DIR] [--keep DIR]" >&2; exit 2 ;;
  esac
done
if [ "$mode" = quick ]; then
  calls=20000 walk=quick mirror=4000 kernel_rounds=10 scale=4 vm_mirror=2000 table="10000 262144" scaling=40000
  bench_args=(--areas-4k 64 --areas-2m 8 --areas-1g 1 --rounds 3 --copy-areas 32 --mirror-changes 1000)
else
  calls=100000 walk="" mirror=20000 kernel_rounds=40 scale=1 vm_mirror=10000 table="" scaling=200000
  bench_args=(--areas-4k 256 --areas-2m 16 --areas-1g 1 --rounds 5 --copy-areas 64 --mirror-changes 4000)
fi

python=${REPORT_PYTHON:-}
if [ -z "$python" ]; then
  venv=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/swift-iommufd/bench-venv
  if ! "$venv/bin/python" -c 'import matplotlib' 2> /dev/null; then
    echo "report: installing matplotlib into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q matplotlib
  fi
  python=$venv/bin/python
fi

if [ -n "$keep" ]; then
  run=$(realpath -m "$keep"); rm -rf "$run"; mkdir -p "$run"
else
  run=$(mktemp -d)
  trap 'rm -rf "$run"' EXIT
fi
mkdir -p "$run/vm"
records=$run/records.jsonl
: > "$records"
export BENCH_JSON=$records

step() { echo "report: $*" >&2; }
step "building (release)"
swift build -c release 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
swift build -c release --product iommuctl 2>&1 | { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
bin=.build/release
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

step "host: CallCost (model allocations; instructions under callgrind)"
./call-cost.sh "$calls" > "$run/call-cost-host.txt"
step "host: WalkBenchmark $walk"
"$bin/WalkBenchmark" $walk > "$run/walk.txt"
step "host: MirrorBenchmark host $mirror, allocs"
{ "$bin/MirrorBenchmark" host "$mirror"; "$bin/MirrorBenchmark" allocs; } > "$run/mirror-host.txt"
step "host: MirrorBenchmark table ${table:-(default sizes)}"
"$bin/MirrorBenchmark" table $table > "$run/mirror-table.txt"
step "host: MirrorBenchmark scaling $scaling"
"$bin/MirrorBenchmark" scaling "$scaling" > "$run/mirror-scaling.txt"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

step "vm: CallCost kernel $kernel_rounds, CallCost suite $scale, MirrorBenchmark kernel $vm_mirror, iommuctl bench"
kernel=${HIL_KERNEL:-$(../Harness/build-kernel.sh | tail -1)}
bench_command="iommuctl bench --json ${bench_args[*]}"
vm_script='export BENCH_JSON=/tmp/hil/records.jsonl
cat /proc/cmdline > /tmp/hil/cmdline; uname -r > /tmp/hil/kernel; nproc > /tmp/hil/cpus
grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- > /tmp/hil/cpu; grep MemTotal /proc/meminfo > /tmp/hil/memory
{ dmesg | grep -i hugetlb; for d in /sys/kernel/mm/hugepages/*; do echo "$(basename $d): $(cat $d/nr_hugepages) reserved"; done; } > /tmp/hil/hugetlb 2>&1
'"$bin/CallCost kernel $kernel_rounds"' > /tmp/hil/callcost-kernel.txt 2>&1 || exit 11
'"$bin/CallCost suite $scale"' > /tmp/hil/callcost-suite.txt 2>&1 || exit 12
'"$bin/MirrorBenchmark kernel $vm_mirror"' > /tmp/hil/mirror-kernel.txt 2>&1 || exit 13
'"$bin/iommuctl bench --json ${bench_args[*]}"' > /tmp/hil/bench.json 2> /tmp/hil/bench.err || exit 14'
HIL_KERNEL=$kernel HIL_OUT=$run/vm ../Harness/run-in-vm.sh --timeout 3000 --memory 4096 --append "hugepagesz=1G hugepages=1" --cpu qemu64,+pdpe1gb \
  -- /bin/sh -c "$vm_script" > "$run/vm/console.txt" 2>&1 || {
  rc=$?
  echo "report: the VM part failed (exit $rc; 11-14 name the step); its console:" >&2
  tail -30 "$run/vm/console.txt" >&2
  for f in "$run"/vm/*.txt "$run"/vm/bench.err; do [ -f "$f" ] && { echo "== $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}
[ -f "$run/vm/records.jsonl" ] && cat "$run/vm/records.jsonl" >> "$records"
cp "$run/vm/bench.json" "$run/bench.json"

# The machines, for the doc. JSON by python, so odd characters in a CPU name cannot break it.
step "writing the report"
HOST_CPU=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') \
HOST_CPUS=$(nproc) HOST_MEM=$(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2 / 1048576}') \
HOST_KERNEL=$(uname -r) HOST_OS=$(. /etc/os-release && echo "$PRETTY_NAME") \
COMPILER=$(swift --version 2>&1 | grep -m1 -i "swift version") DATE=$(date -u '+%Y-%m-%d %H:%M UTC') \
MODE=$mode LOAD_START=$load_start LOAD_END=$load_end RUN=$run BENCH_COMMAND=$bench_command \
COMMANDS="Benchmarks/report.sh$([ "$mode" = quick ] && echo " --quick")
Benchmarks/call-cost.sh $calls
Benchmarks/.build/release/WalkBenchmark $walk
Benchmarks/.build/release/MirrorBenchmark host $mirror; Benchmarks/.build/release/MirrorBenchmark allocs
Benchmarks/.build/release/MirrorBenchmark table${table:+ $table}; Benchmarks/.build/release/MirrorBenchmark scaling $scaling
Harness/run-in-vm.sh --memory 4096 --append \"hugepagesz=1G hugepages=1\" --cpu qemu64,+pdpe1gb -- sh -c 'CallCost kernel $kernel_rounds; CallCost suite $scale; MirrorBenchmark kernel $vm_mirror; $bench_command'" \
"$python" - <<'EOF'
import json, os
e = os.environ
vm = lambda name: open(os.path.join(e["RUN"], "vm", name)).read().strip() if os.path.exists(os.path.join(e["RUN"], "vm", name)) else "?"
mem = vm("memory").split()
facts = {
    "command": "Benchmarks/report.sh" + (" --quick" if e["MODE"] == "quick" else ""), "mode": e["MODE"], "date": e["DATE"],
    "compiler": e["COMPILER"], "bench_command": e["BENCH_COMMAND"], "commands": e["COMMANDS"].split("\n"),
    "host": {"cpu": e["HOST_CPU"], "cpus": e["HOST_CPUS"], "memory": e["HOST_MEM"], "kernel": e["HOST_KERNEL"], "os": e["HOST_OS"],
             "load_start": e["LOAD_START"], "load_end": e["LOAD_END"]},
    "vm": {"cpu": "QEMU TCG: " + vm("cpu").strip(), "cpus": vm("cpus"), "kernel": vm("kernel"), "cmdline": vm("cmdline"),
           "memory": f"{int(mem[1]) / 1048576:.1f} GiB" if len(mem) > 1 else "?",
           "hugetlb": [l.strip() for l in vm("hugetlb").splitlines() if l.strip()]},
}
json.dump(facts, open(os.path.join(e["RUN"], "facts.json"), "w"), indent=1)
EOF
mkdir -p "$out"
"$python" report/report.py "$run" "$out"
