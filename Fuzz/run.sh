#!/usr/bin/env bash
# Builds every walker fuzz target with libFuzzer + AddressSanitizer and runs each for a bounded
# time. Usage: Fuzz/run.sh [seconds-per-format] [--xunit FILE]   (default 60 s). Exits non-zero
# on any crash; with --xunit, also writes one test case per format (failed when it crashed).
set -euo pipefail
xunit=""
seconds=60
while [ $# -gt 0 ]; do
    case "$1" in
        --xunit) xunit=$(realpath -m "$2"); shift 2 ;;
        *) seconds=$1; shift ;;
    esac
done
cd "$(dirname "$0")"
formats=(VTdSecondStage X86FirstStage AMDv1 Arm4K Arm16K Arm64K ArmStage2 ArmV7Short RISCV)

swift build -c release --sanitize fuzzer --sanitize address 2>&1 | grep -v "Cannot export local symbol" || true
bin="$(swift build -c release --sanitize fuzzer --sanitize address --show-bin-path)"

failed=0
cases=""
for f in "${formats[@]}"; do
    corpus="corpus/$f"
    mkdir -p "$corpus" artifacts
    echo "== Fuzz$f: ${seconds}s"
    if ! "$bin/Fuzz$f" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="artifacts/$f-" -print_final_stats=1 "$corpus" 2>"artifacts/$f.log"; then
        echo "!! Fuzz$f failed; see Fuzz/artifacts/$f.log"; tail -30 "artifacts/$f.log"; failed=1
        cases+="<testcase classname=\"Fuzz\" name=\"$f\"><failure message=\"crash; see Fuzz/artifacts/$f.log\"/></testcase>"
    else
        grep -E "stat::number_of_executed_units|Done" "artifacts/$f.log" | tr '\n' ' '; echo
        cases+="<testcase classname=\"Fuzz\" name=\"$f\"/>"
    fi
done
if [ -n "$xunit" ]; then
    printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="Fuzz">%s</testsuite></testsuites>\n' "$cases" > "$xunit"
fi
exit "$failed"
