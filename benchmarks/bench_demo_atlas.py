"""The demo atlas at first start (draw + scan) and at a second start (cache), per demo model.

    python benchmarks/bench_demo_atlas.py [--repeats 3] [--demos shapes glyphs] [--images N]

Each repeat uses a fresh temporary atlas cache and runs, for each demo in turn (so both see
the same machine load), a first start -- draw the generator's images, scan every visualizable
layer, on a channels-last copy of the model as the window does -- then a second start of the same model (everything from the cache).  Prints wall time,
process CPU time and the drawing/scanning split (medians), with the load average before and
after: the wall time on a shared machine is the CPU time stretched by the load.  Like the window,
it imports ``cnnvis_gui`` before torch (OpenMP's threads sleep while they wait) and keeps freed
tensor memory (:mod:`cnnvis_gui.core.allocator`).  Never part of the test pass/fail.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cnnvis_gui  # noqa: E402,F401  (before torch: OpenMP's threads sleep while they wait, as in the window)
import torch  # noqa: E402

from cnnvis_gui import models  # noqa: E402
from cnnvis_gui.atlas import demo as D  # noqa: E402


def one(lm, name, cache, n) -> dict:
    # as the window does: a private copy of the model in channels-last memory format
    model = copy.deepcopy(lm.model).to(memory_format=torch.channels_last)
    d = D.DemoAtlas(model, lm.spec, name, cache_dir=cache, n=n)
    w0, c0 = time.perf_counter(), time.process_time()
    scan_start = None
    for p in d.run():
        if p.phase != "drawing" and scan_start is None:
            scan_start = time.perf_counter()
    wall = time.perf_counter() - w0
    return {"wall": wall, "cpu": time.process_time() - c0,
            "draw": (scan_start or time.perf_counter()) - w0, "cached": d.result.from_cache}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--demos", nargs="+", default=["shapes", "glyphs"], choices=models.DEMO_NAMES)
    ap.add_argument("--images", type=int, default=D.DEMO_IMAGES)
    a = ap.parse_args(argv)
    from cnnvis_gui.core.allocator import reuse_freed_memory           # as the window does at its start
    from cnnvis_gui.core.threads import openmp_waiting
    print(f"load average before: {os.getloadavg()}, cpus {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
          f"{a.images} images per demo; {openmp_waiting()}; malloc: {reuse_freed_memory()}")
    lms = {n: models.demo(n) for n in a.demos}
    rows = {(n, k): [] for n in a.demos for k in ("first", "second")}
    for _ in range(a.repeats):
        with tempfile.TemporaryDirectory() as cache:
            for n in a.demos:
                rows[n, "first"].append(one(lms[n], n, cache, a.images))
                rows[n, "second"].append(one(lms[n], n, cache, a.images))
    print(f"{'demo':8} {'start':7} {'wall s':>8} {'cpu s':>8} {'drawing s':>10} {'from cache':>11}")
    for (n, k), rs in rows.items():
        med = {f: statistics.median(r[f] for r in rs) for f in ("wall", "cpu", "draw")}
        print(f"{n:8} {k:7} {med['wall']:8.2f} {med['cpu']:8.2f} {med['draw']:10.2f} "
              f"{all(r['cached'] for r in rs)!s:>11}")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
