#!/usr/bin/env bash
# Builds every walker fuzz target with libFuzzer + AddressSanitizer and runs each for a bounded
# time. Usage: Fuzz/run.sh [seconds-per-format] [--xunit FILE]   (default 60 s). Exits non-zero
# when a target fails to build or crashes; with --xunit, also writes one test case per format
# (failed when it did not build or crashed).
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
# The walker of every format, and the mirror engine on the kernel model (Targets/Mirror).
formats=(VTdSecondStage X86FirstStage AMDv1 Arm4K Arm16K Arm64K ArmStage2 ArmV7Short RISCV Mirror)

sanitize=(-c release --sanitize fuzzer --sanitize address)
bin="$(swift build "${sanitize[@]}" --show-bin-path)"

failed=0
cases=""
for f in "${formats[@]}"; do
    corpus="corpus/$f"
    mkdir -p "$corpus" artifacts
    # One product at a time, so a target that does not build is named and counted, and a
    # binary left from an earlier build is never run in its place. grep drops the gold
    # linker's harmless warnings; pipefail keeps swift's status.
    echo "== Fuzz$f: build"
    if ! swift build "${sanitize[@]}" --product "Fuzz$f" 2>&1 | { grep -v "Cannot export local symbol" || true; }; then
        echo "!! Fuzz$f did not build"; failed=1
        cases+="<testcase classname=\"Fuzz\" name=\"$f\"><failure message=\"build failed\"/></testcase>"
        continue
    fi
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
