"""Atlas scan throughput in 1 process and in 2 torchrun ranks (gloo), on generated folders.

    python benchmarks/bench_atlas_dist.py [--repeats 3] [--shapes-images 1024] [--resnet-images 256]

For each model it alternates the two cases (after one warm-up of each) so both see the same
machine load, and prints medians:

* 1 process: ``python bench_atlas_dist.py --worker`` -- a plain :class:`TopKScan` (cache off),
  with torch's default threads (the cores) and with one thread;
* 2 ranks: ``python -m torch.distributed.run --standalone --nproc_per_node 2 bench_atlas_dist.py
  --worker`` -- every rank scans its slice (``shard=(RANK, 2)``), the parts are gathered on rank 0
  and merged (:mod:`cnnvis_gui.atlas.distributed`, :func:`cnnvis_gui.atlas.merge.merge_parts`),
  exactly what ``torchrun ... -m cnnvis_gui atlas`` does before the crops.

"scan img/s" is images / (wall time from the start barrier to the merged result on rank 0): the
scan itself, not the start of the processes; "command s" is the whole command's wall time
(imports, model load, rendezvous); "CPU s" the CPU time of all its processes.  Threads: one
process gets torch's default (the cores); torchrun gives each rank ``OMP_NUM_THREADS=1``
unless set.  Prints a table with the load average before and after; never part of the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _model(name: str):
    import torch

    from cnnvis_gui.core import IMAGENET_MEAN, IMAGENET_STD, InputSpec

    if name == "shapes":
        from cnnvis_gui.models import demo
        lm = demo("shapes", device="cpu")
        return lm.model, lm.spec, ["features.10", "features.14", "output"], 64
    import torchvision
    torch.manual_seed(0)                                   # the same weights on every rank
    model = torchvision.models.resnet18(weights=None).eval()
    return model, InputSpec(3, 224, 224, mean=IMAGENET_MEAN, std=IMAGENET_STD), ["layer3", "layer4", "output"], 32


def worker(args) -> None:
    """One process of a case: scan (a slice under torchrun), gather, merge; rank 0 prints JSON."""
    import torch

    from cnnvis_gui.atlas import distributed as D
    from cnnvis_gui.atlas.merge import merge_parts, part_from_scan
    from cnnvis_gui.atlas.scan import TopKScan

    model, spec, layers, batch = _model(args.model)
    world = D.world_from_env()
    shard = None if world is None else (world.rank, world.size)
    scan = TopKScan(model, spec, args.folder, layers, k=9, batch_size=batch, use_cache=False, shard=shard)
    scan.total                                             # list the folder, hash the weights
    if world is None:
        t0 = time.perf_counter()
        for _ in scan.run():
            pass
        t1 = time.perf_counter()
        print(json.dumps({"scan_s": t1 - t0, "merge_s": 0.0, "images": scan.listing_size,
                          "threads": torch.get_num_threads(), "per_rank": [scan.total]}))
        return
    with D.process_group(world, "gloo"):
        import torch.distributed as dist
        dist.barrier()
        t0 = time.perf_counter()
        for _ in scan.run():
            pass
        parts = D.gather_parts(world, part_from_scan(scan))
        t1 = time.perf_counter()
        if world.main:
            merge_parts(parts)
            t2 = time.perf_counter()
            print(json.dumps({"scan_s": t2 - t0, "merge_s": t2 - t1, "images": scan.listing_size,
                              "threads": torch.get_num_threads(), "per_rank": [p.range[1] - p.range[0]
                                                                                for p in parts]}))


#: (processes, torch threads per process; None = torch's default)
CASES = ((1, None), (1, 1), (2, 1))


def run_case(model: str, folder: Path, procs: int, threads: int | None) -> dict:
    me = [str(Path(__file__).resolve()), "--worker", "--model", model, "--folder", str(folder)]
    if procs == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *me]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT), env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1]
    out = json.loads(line)
    out.update(command_s=wall, cpu_s=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes-images", type=int, default=1024)
    ap.add_argument("--resnet-images", type=int, default=256)
    ap.add_argument("--skip-resnet", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    from bench_atlas import make_folder

    load0 = os.getloadavg()
    cases = [("shapes", "shapes demo 64x64 (PNG)", args.shapes_images, 64, ".png")]
    if not args.skip_resnet:
        cases.append(("resnet18", "ResNet-18 224x224 (JPEG 256)", args.resnet_images, 256, ".jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, label, n, size, ext in cases:
            folder = Path(tmp) / model
            make_folder(folder, n, size, ext)
            for case in CASES:                                     # warm-up (disk cache, imports)
                run_case(model, folder, *case)
            runs = {case: [] for case in CASES}
            for _ in range(args.repeats):
                for case in CASES:
                    runs[case].append(run_case(model, folder, *case))
            for (procs, _), rs in runs.items():
                rows.append((label, procs, rs[0]["images"], rs[0]["threads"], rs[0]["per_rank"],
                             statistics.median(r["images"] / r["scan_s"] for r in rs),
                             statistics.median(r["command_s"] for r in rs),
                             statistics.median(r["cpu_s"] for r in rs),
                             statistics.median(r["merge_s"] for r in rs)))
    load1 = os.getloadavg()
    print(f"\n{args.repeats} repeats, median; cases alternated; load average {load0[0]:.1f} before, "
          f"{load1[0]:.1f} after; {os.cpu_count()} CPUs")
    print(f"{'model':30s} {'procs':>5s} {'threads':>7s} {'images':>6s} {'per rank':>10s} {'scan img/s':>10s} "
          f"{'speedup':>7s} {'command s':>9s} {'CPU s':>6s} {'merge ms':>8s}")
    base = {}
    for label, procs, n, threads, per, rate, cmd_s, cpu_s, merge_s in rows:
        base.setdefault(label, rate)
        print(f"{label:30s} {procs:5d} {threads:7d} {n:6d} {'/'.join(map(str, per)):>10s} {rate:10.1f} "
              f"{rate / base[label]:6.2f}x {cmd_s:9.1f} {cpu_s:6.1f} {1000 * merge_s:8.1f}")


if __name__ == "__main__":
    main()
