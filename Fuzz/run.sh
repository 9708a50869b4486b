#!/usr/bin/env bash
# Builds every walker fuzz target with libFuzzer + AddressSanitizer and runs each for a bounded
# time. Usage: Fuzz/run.sh [seconds-per-format]   (default 60). Exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
formats=(VTdSecondStage X86FirstStage AMDv1 Arm4K Arm16K Arm64K ArmStage2 ArmV7Short RISCV)

swift build -c release --sanitize fuzzer --sanitize address 2>&1 | grep -v "Cannot export local symbol" || true
bin="$(swift build -c release --sanitize fuzzer --sanitize address --show-bin-path)"

failed=0
for f in "${formats[@]}"; do
    corpus="corpus/$f"
    mkdir -p "$corpus" artifacts
    echo "== Fuzz$f: ${seconds}s"
    if ! "$bin/Fuzz$f" -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
            -artifact_prefix="artifacts/$f-" -print_final_stats=1 "$corpus" 2>"artifacts/$f.log"; then
        echo "!! Fuzz$f failed; see Fuzz/artifacts/$f.log"; tail -30 "artifacts/$f.log"; failed=1
    else
        grep -E "stat::number_of_executed_units|Done" "artifacts/$f.log" | tr '\n' ' '; echo
    fi
done
exit "$failed"
