"""Plant the bugs of issues 16's and 30's tables, one at a time, and check that the suite catches each (not CI).

    python tools/planted.py            # every planted bug; exit 1 if one survives
    python tools/planted.py -k scan    # only those whose name contains "scan"

Each bug is a one-line change of a real file, in a scratch copy of the working tree (your checkout
is never touched); the tests that guard that file run with ``-x``.  "caught" means a test failed;
"SURVIVES" means the suite passed with the bug in, which is a hole to close with a test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (file, the line as it is, the line with the bug, the tests that must catch it)
PLANTED = {
    "guided rule drops the forward mask": (
        "cnnvis_gui/core/rules.py",
        "return (grad_inputs[0].clamp_(min=0),)",
        "return (grad_outputs[0].clamp(min=0),)",
        ["tests/core"]),
    "mosaic position_at off by one": (
        "cnnvis_gui/core/display.py",
        "c, dx = divmod(xi - s, tw + s)",
        "c, dx = divmod(xi - s + 1, tw + s)",
        ["tests/core/test_display.py", "tests/core/test_display_contracts.py"]),
    "position_at truncates instead of flooring": (
        "cnnvis_gui/core/display.py",
        "xi, yi = math.floor(x), math.floor(y)",
        "xi, yi = int(x), int(y)",
        ["tests/core/test_display.py", "tests/core/test_display_contracts.py"]),
    "scan takes the map's height as its width": (
        "cnnvis_gui/atlas/scan.py",
        "w = a.shape[3]",
        "w = a.shape[2]",
        ["tests/atlas/test_scan.py", "tests/atlas/test_scan_geometry.py"]),
    "merge sorts without stable=True": (
        "cnnvis_gui/atlas/scan.py",
        "order = torch.sort(av, dim=1, descending=True, stable=True).indices[:, :k]",
        "order = torch.sort(av, dim=1, descending=True).indices[:, :k]",
        ["tests/atlas/test_scan_geometry.py", "tests/atlas/test_merge.py"]),
    "window ignores the frozen unit": (
        "cnnvis_gui/qt/render.py",
        "bp_layer, bp_unit = s.backprop_unit",
        "bp_layer, bp_unit = s.layer, s.unit",
        ["tests/qt/test_window_drawn.py", "tests/qt/test_window_keys.py"]),
    "window ignores the display filter": (
        "cnnvis_gui/qt/render.py",
        "filter=s.filter,",
        "filter=\"normblur\",",
        ["tests/qt/test_window_drawn.py", "tests/qt/test_window_keys.py"]),
    "window ignores gamma": (
        "cnnvis_gui/qt/render.py",
        "gamma=s.gamma,",
        "gamma=1.0,",
        ["tests/qt/test_window_drawn.py", "tests/qt/test_window_keys.py"]),
    "window ignores per-unit scaling": (
        "cnnvis_gui/qt/render.py",
        "normalize=\"unit\" if s.per_unit else \"layer\",",
        "normalize=\"layer\",",
        ["tests/qt/test_window_drawn.py", "tests/qt/test_window_keys.py"]),
    # issue 30: plausible bugs that once passed the whole suite
    "cache writes in place": (
        "cnnvis_gui/core/files.py",     # the one atomic writer the cache writes through
        "fd, tmp = tempfile.mkstemp(prefix=f\".{path.name[:100]}.\", suffix=\".tmp\", dir=str(path.parent))",
        "fd, tmp = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), str(path)",
        ["tests/atlas/test_cache_identity_writes.py", "tests/core/test_files.py"]),
    "cache key over the parameters only": (
        "cnnvis_gui/atlas/cache.py",
        "for name, t in model.state_dict().items():",
        "for name, t in model.named_parameters():",
        ["tests/atlas/test_cache_identity_writes.py"]),
    "pump does not mark a frame taken": (
        "cnnvis_gui/sources/pump.py",
        "self._taken_id = self._frame_id\n            return self._frame_id, self._frame",
        "return self._frame_id, self._frame",
        ["tests/sources/test_sources.py"]),
    "window keeps a unit one past a smaller layer's last": (
        "cnnvis_gui/qt/window.py",
        "if self.state.unit >= n:",
        "if self.state.unit > n:",
        ["tests/qt/test_window.py"]),
    "16-bit images truncated": (
        "cnnvis_gui/sources/base.py",
        "img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)",
        "img = (img >> 8).astype(np.uint8)",
        ["tests/sources/test_sources.py"]),
    "trust: any head starting with torchvision": (
        "cnnvis_gui/models/trust.py",
        "if head == \"torchvision\":",
        "if head.startswith(\"torchvision\"):",
        ["tests/models/test_trust_boundaries.py", "tests/models/test_trust.py"]),
    "trust: any head starting with timm": (
        "cnnvis_gui/models/trust.py",
        "if head == \"timm\":",
        "if head.startswith(\"timm\"):",
        ["tests/models/test_trust_boundaries.py", "tests/models/test_trust.py"]),
    "labels skip blank lines": (
        "cnnvis_gui/models/labels.py",
        "labels = [_label_str(ln.strip()) for ln in text.splitlines()]",
        "labels = [_label_str(ln.strip()) for ln in text.splitlines() if ln.strip()]",
        ["tests/models/test_labels.py", "tests/qt/test_window_labels.py"]),
    "key prefix stripped only when every key has it": (
        "cnnvis_gui/models/state_dicts.py",
        "if any(k.startswith(p) for k in d):",
        "if all(k.startswith(p) for k in d):",
        ["tests/models/test_state_dicts.py", "tests/models/test_models_loading.py"]),
    "window computes a frame it already has": (
        "cnnvis_gui/qt/inputs.py",
        "if f is None or f is self._last_raw:",
        "if f is None:",
        ["tests/qt/test_live_input.py"]),
}


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only the planted bugs whose name contains this")
    args = ap.parse_args(argv)
    chosen = {n: v for n, v in PLANTED.items() if args.k in n}
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", OMP_NUM_THREADS="1")
    stale = [f"{name}: the line to change is not (exactly once) in {rel}; update tools/planted.py"
             for name, (rel, good, _, _) in chosen.items() if (ROOT / rel).read_text(encoding="utf-8").count(good) != 1]
    if stale:                      # said before any plant runs, not after minutes of the others
        print("\n".join(stale))
        return 2
    survived = []
    with tempfile.TemporaryDirectory(prefix="cnnvis-planted-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        env["PYTHONPATH"] = str(work)
        for name, (rel, good, bad, tests) in chosen.items():
            path = work / rel
            text = path.read_text(encoding="utf-8")
            if text.count(good) != 1:
                print(f"{name}: the line to change is not (exactly once) in {rel}; update tools/planted.py")
                return 2
            path.write_text(text.replace(good, bad), encoding="utf-8")
            t0 = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                 cwd=work, env=env, capture_output=True, text=True)
            path.write_text(text, encoding="utf-8")
            verdict = "caught" if run.returncode == 1 else "SURVIVES" if run.returncode == 0 else f"error {run.returncode}"
            if run.returncode == 0:
                survived.append(name)
            last = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
            print(f"{verdict:9} {name}  ({rel}; {last}; {time.perf_counter() - t0:.0f} s)", flush=True)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
