#!/usr/bin/env bash
# Run the whole test suite under a background load of 2x the cores (issue 30), as the README records.
#
#   tools/suite_under_load.sh                 # 2 x nproc busy processes beside the suite
#   BURNERS=6 tools/suite_under_load.sh -x     # another load; the rest are pytest's arguments
#
# The busy processes are plain Python loops at the suite's own priority (not niced: a niced load
# would barely take CPU from the tests). The 1-minute load average is sampled every 30 s while the
# suite runs; the last line says the commit, pytest's summary, the wall time and the load's range.
# Not part of CI: it takes 2-4x the suite's quiet time.
set -uo pipefail
main() {
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
n=${BURNERS:-$(( 2 * $(nproc) ))}
log=$(mktemp -t cnnvis-load.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -f "$log"; }
trap cleanup EXIT INT TERM
for _ in $(seq "$n"); do python3 -c 'while True: pass' & pids+=($!); done
( while true; do cut -d' ' -f1 /proc/loadavg >> "$log"; sleep 30; done ) & pids+=($!)
start=$(date +%s)
python -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$log.out" | tail -n 15
rc=${PIPESTATUS[0]}
wall=$(( $(date +%s) - start ))
summary=$(grep -E '(passed|failed|error)' "$log.out" | tail -n 1 | tr -d '=' | sed 's/^ *//')
range=$(sort -n "$log" | sed -n '1p;$p' | paste -sd- -)
rm -f "$log.out"
echo "suite_under_load: $(git rev-parse --short HEAD) $(date -u +%F) burners=$n: $summary; wall ${wall} s; load average (1 min) $range"
return "$rc"
}
main "$@"
