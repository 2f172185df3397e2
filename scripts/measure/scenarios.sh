#!/usr/bin/env bash
# Every load scenario in loadtest/scenarios/, one after the other, on the release build, each at
# its own rate and duration: prints each scenario's verdict line and failed invariants, keeps the
# full output in a folder, and exits non-zero if any scenario failed. Scenarios that only report
# (spike, ramp) print their findings as their verdict. Run from the repository root after
# `cargo build --release --bins`.
#
#   scripts/measure/scenarios.sh [NAME ...]     (default: all)
#
# BED=netns runs them on the multi-host bed (as root: every process on a host of its own, the
# proxies behind a Service VIP; docs/faults.md). Scenarios that cut hosts off need it.
#
# Output folder: $SCENARIO_LOGS or a new temporary one (printed at the end).
set -uo pipefail
LT=${LOADTEST:-target/release/loadtest}
LOGS=${SCENARIO_LOGS:-$(mktemp -d /tmp/scenarios.XXXXXX)}
mkdir -p "$LOGS"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for f in loadtest/scenarios/*.toml; do names+=("$(basename "$f" .toml)"); done
fi
failed=0
for name in "${names[@]}"; do
    log="$LOGS/$name.log"
    start=$(date +%s)
    "$LT" local --bed "${BED:-loopback}" --scenario "loadtest/scenarios/$name.toml" > "$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    echo "== $name (exit $rc, ${secs} s, load average $(cut -d' ' -f1 /proc/loadavg))"
    grep -E '^(RESULT|FAIL|REPORT|saturation|spike)' "$log" | head -8
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
done
echo "logs: $LOGS; $failed of ${#names[@]} scenarios failed"
[ "$failed" -eq 0 ]
