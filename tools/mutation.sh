#!/usr/bin/env bash
# Mutation testing of one module (not part of CI): mutmut mutates MODULE, runs only the tests that
# guard it, and this script prints the surviving mutants (each with its diff) and the counts.
#
#   tools/mutation.sh core/display.py                 # or cnnvis_gui/core/display.py
#   JOBS=2 tools/mutation.sh atlas/scan.py             # mutants run in parallel: JOBS (default 1)
#   tools/mutation.sh core/engine.py -k 'guided or deconv'       # only these tests (pytest -k)
#   tools/mutation.sh atlas/scan.py -m '*_merge*' -m '*_max_and_position*'  # only these mutants (mutmut names)
#   MUTATION_TESTS="tests/core/test_engine_inputs.py" tools/mutation.sh core/engine.py   # other tests
#
# It works in a scratch copy of the working tree (so your checkout gets no mutants/ folder) and
# runs with PYTHONPATH unset: mutmut's trampolined copy in mutants/ must be the package imported.
# A survivor is a change of the code that no test notices: kill it with a test, or note it as
# equivalent (it cannot change what a user sees).  Results: $OUT (default /tmp/cnnvis-mutation/<module>).
set -euo pipefail
main() {    # one function: bash has read the whole script before it runs (safe to edit it meanwhile)
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MOD="${1:?usage: tools/mutation.sh MODULE [-k PYTEST_EXPR] [-m MUTANT_PATTERN]}"
shift
KEXPR=""
PATTERNS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -k) KEXPR="$2"; shift 2 ;;
    -m) PATTERNS+=("$2"); shift 2 ;;
    *) echo "mutation.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
MOD="${MOD#cnnvis_gui/}"
[ -f "$ROOT/cnnvis_gui/$MOD" ] || { echo "mutation.sh: no module cnnvis_gui/$MOD" >&2; exit 2; }

# the tests that guard each module (keep them fast: every mutant runs the ones covering its function)
case "$MOD" in
  core/display.py) TESTS="tests/core/test_display.py tests/core/test_display_contracts.py tests/core/test_display_extremes.py" ;;
  core/engine.py)  TESTS="tests/core" ;;   # cams and attribution call the engine too
  core/spec.py)    TESTS="tests/core/test_spec_reference.py tests/core/test_spec.py tests/sources/test_sources.py tests/atlas/test_scan_inputs.py tests/models/test_models_loading.py" ;;
  core/cams.py)    TESTS="tests/core/test_cams_batches.py tests/core/test_cams.py" ;;
  core/attribution.py) TESTS="tests/core/test_attribution_reference.py tests/core/test_attribution.py" ;;
  core/threads.py) TESTS="tests/core/test_threads.py tests/cli/test_threads_option.py" ;;
  core/allocator.py) TESTS="tests/core/test_allocator.py" ;;
  core/errors.py)  TESTS="tests/core/test_rules_views.py tests/core/test_engine_inputs.py" ;;
  core/hooks.py)   TESTS="tests/core tests/atlas/test_scan.py tests/atlas/test_scan_faults.py" ;;
  core/recorder.py|core/modelmap.py)   # the engine's own tests cover every recorded call (quicker than tests/core)
                   TESTS="tests/core/test_engine.py tests/core/test_engine_inputs.py" ;;
  core/*)          TESTS="tests/core" ;;
  atlas/scan.py|atlas/sweep.py|atlas/folders.py|atlas/results.py|atlas/state.py)   # split out of scan.py: its tests
                   TESTS="tests/atlas/test_scan.py tests/atlas/test_scan_geometry.py tests/atlas/test_cache_damage.py tests/atlas/test_scan_faults.py tests/atlas/test_scan_dtypes.py tests/atlas/test_merge.py tests/atlas/test_scan_words.py tests/atlas/test_scan_inputs.py tests/atlas/test_scan_loop.py" ;;
  atlas/crops.py)  TESTS="tests/atlas/test_crops.py tests/atlas/test_crops_probes.py tests/atlas/test_crops_reference.py" ;;
  qt/render.py)    TESTS="tests/qt/test_window_drawn.py tests/qt/test_window_keys.py tests/qt/test_window.py tests/qt/test_render_requests.py tests/qt/test_controllers.py" ;;
  sources/pump.py) TESTS="tests/sources/test_sources.py tests/sources/test_pump_defaults.py tests/sources/test_pump_files.py" ;;
  models/state_dicts.py) TESTS="tests/models/test_state_dicts.py tests/models/test_state_dicts_edges.py tests/models/test_models_loading.py tests/models/test_models_loader_fixes.py" ;;
  models/trust.py) TESTS="tests/models/test_trust_boundaries.py tests/models/test_trust.py" ;;
  models/labels.py) TESTS="tests/models/test_labels.py tests/models/test_models_loading.py" ;;
  atlas/cache.py)  TESTS="tests/atlas/test_cache_identity_writes.py tests/atlas/test_cache_keys_edges.py tests/atlas/test_cache_damage.py tests/atlas/test_atlas_keys_faults.py" ;;
  *) [ -n "${MUTATION_TESTS:-}" ] || { echo "mutation.sh: no test list for $MOD; add it to the table in tools/mutation.sh" >&2; exit 2; } ;;
esac
TESTS="${MUTATION_TESTS:-$TESTS}"   # MUTATION_TESTS="tests/a.py tests/b.py::test_x" overrides the table

OUT="${OUT:-/tmp/cnnvis-mutation/${MOD//\//_}}"
rm -rf "$OUT"
mkdir -p "$OUT"
# the working tree as it is (tracked + untracked, not ignored files)
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$OUT" 2>/dev/null || true)
cd "$OUT"
python - "$MOD" "$KEXPR" $TESTS <<'PY'
import re, sys
mod, kexpr, tests = sys.argv[1], sys.argv[2], sys.argv[3:]
text = open("pyproject.toml", encoding="utf-8").read()
start = text.index("[tool.mutmut]")
end = text.find("\n[", start + 1)
end = len(text) if end < 0 else end
sel = tests + (["-k", kexpr] if kexpr else [])
block = ("[tool.mutmut]\n"
         'source_paths = ["cnnvis_gui"]\n'
         f'only_mutate = ["cnnvis_gui/{mod}"]\n'
         f"pytest_add_cli_args_test_selection = {sel!r}\n"
         'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider"]\n'
         'process_isolation = "forkserver"\n'
         'also_copy = ["assets", "docs", "README.md"]\n'   # samples, checkpoints; the key table the window tests read
         # a mutant that loops is stopped after 2 x 3 x (its tests' time + 1 s) of CPU (mutmut's
         # default 15 x cost up to 3 minutes for each such mutant of the engine)
         'timeout_multiplier = 3.0\n'
         # ... plus 20 s: a mutant's process pays the imports (torchvision, timm: seconds of CPU) that the
         # stats run paid once, in its first test; with mutmut's 1 s every trust.py mutant hit SIGXCPU
         'timeout_constant = 20.0\n').replace("'", '"')
open("pyproject.toml", "w", encoding="utf-8").write(text[:start] + block + text[end:])
PY
unset PYTHONPATH
export QT_QPA_PLATFORM=offscreen OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# a mutant that breaks the state a test waits for fails after 30 s, not after the suite's 180 s bound
# (mutmut would stop it for its CPU time and count a timeout); the clean run shows the tests pass with it
export CNNVIS_TEST_WAIT_S="${CNNVIS_TEST_WAIT_S:-30}"
echo "mutation.sh: mutating cnnvis_gui/$MOD, tests: $TESTS ${KEXPR:+(-k $KEXPR)} in $OUT" >&2
t0=$(date +%s)
if ! mutmut run --max-children "${JOBS:-1}" "${PATTERNS[@]}" > "$OUT/run.log" 2>&1; then
  # on tests/core, mutmut's first stats collection sometimes fails with no output while the same
  # tests pass by hand and under mutmut's debug = true (output not captured): collect the stats
  # that way once, then run as usual (the stats are cached in mutants/)
  grep -q "failed to collect stats" "$OUT/run.log" || { tail -30 "$OUT/run.log" >&2; exit 1; }
  echo "mutation.sh: stats collection failed; collecting them again with mutmut's debug = true" >&2
  cp pyproject.toml pyproject.nodebug
  sed -i 's/^\[tool.mutmut\]$/[tool.mutmut]\ndebug = true/' pyproject.toml
  mutmut run --max-children 1 "cnnvis_gui.no_such_mutant" > "$OUT/stats.log" 2>&1 || true
  mv pyproject.nodebug pyproject.toml
  mutmut run --max-children "${JOBS:-1}" "${PATTERNS[@]}" > "$OUT/run.log" 2>&1 || { tail -30 "$OUT/run.log" >&2; exit 1; }
fi
mutmut results --all true > "$OUT/results.txt" 2>/dev/null || mutmut results > "$OUT/results.txt"
echo "== surviving mutants of cnnvis_gui/$MOD =="
{ grep -E ": (survived|no tests|timeout|suspicious)$" "$OUT/results.txt" || true; } | while read -r line; do
  name="$(echo "${line%%:*}" | tr -d ' ')"
  mutmut show "$name" 2>/dev/null | sed -n '1,40p'
  echo
done
echo "== counts ($(( $(date +%s) - t0 )) s) =="
sed -E 's/.*: //' "$OUT/results.txt" | sort | uniq -c
}
main "$@"; exit $?   # on one line: bash reads no further once main returns (safe to edit meanwhile)
