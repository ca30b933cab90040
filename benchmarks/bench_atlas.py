"""Top-k scan throughput against the bare no-grad forward of the same model and batch size.

    python benchmarks/bench_atlas.py [--device cpu|cuda] [--repeats 3] [--shapes-images 512] [--resnet-images 128]

For each model, the same run measures, alternating the two so both see the same machine load
(median over repeats, after one warm-up run of each):

* forward: ``model(x)`` under ``torch.no_grad`` on batches already in memory (no decode);
* scan: :class:`cnnvis_gui.atlas.TopKScan` over a folder of generated images (PNG for the
  shapes demo at 64 x 64, JPEG 256 x 256 -> crop 224 for ResNet-18), cache off, so it pays
  decoding, resizing, normalization, hooks and the top-k merge;

and prints images/s of both and their ratio (target >= 0.9).  ResNet-18 is torchvision's,
randomly initialized.  Prints a table; never part of the test pass/fail.

It runs as ``cnnvis atlas`` does: ``cnnvis_gui`` is imported before torch, so OpenMP's threads
sleep while they wait (:mod:`cnnvis_gui.core.threads`; imported after torch, they spin, which on
a shared machine measures the spinning), and malloc keeps freed tensor memory
(:mod:`cnnvis_gui.core.allocator`).  Both are printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cnnvis_gui  # noqa: E402,F401  (before torch: OpenMP waits as in the app, see cnnvis_gui.core.threads)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from cnnvis_gui.atlas import TopKScan  # noqa: E402
from cnnvis_gui.core import InputSpec, IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


def make_folder(folder: Path, n: int, size: int, ext: str, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size, size, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(4):
            c = tuple(int(v) for v in rng.integers(0, 255, 3))
            x, y = (int(v) for v in rng.integers(0, size, 2))
            cv2.circle(img, (x, y), int(rng.integers(size // 16, size // 4)), c, -1)
        img = np.clip(img.astype(np.int16) + rng.integers(-25, 25, img.shape), 0, 255).astype(np.uint8)
        sub = folder / f"class{i % 4}"
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"img{i:05d}{ext}"), img)


def bench_forward(model, spec, n, batch, device, repeats):
    x = torch.randn((batch,) + spec.shape, device=device)
    rates = []
    with torch.no_grad():
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            done = 0
            while done < n:
                b = min(batch, n - done)
                model(x[:b])
                done += b
            if device.type == "cuda":
                torch.cuda.synchronize()
            rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_scan(model, spec, folder, layers, batch, repeats, workers):
    rates, waits = [], []
    for _ in range(repeats):
        s = TopKScan(model, spec, folder, layers, k=9, batch_size=batch, use_cache=False, workers=workers)
        n = s.total
        t0 = time.perf_counter()
        for _ in s.run():
            pass
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        el = time.perf_counter() - t0
        rates.append(n / el)
        waits.append(s.wait_s / el)
    return statistics.median(rates), n, statistics.median(waits)


def interleaved(model, spec, folder, layers, batch, device, repeats, workers):
    """Alternate forward and scan runs (after one warm-up of each) so both see the same machine load."""
    n = TopKScan(model, spec, folder, layers, batch_size=batch, use_cache=False).total
    bench_forward(model, spec, batch, batch, device, 1)
    bench_scan(model, spec, folder, layers, batch, 1, workers)
    fwd, scan, wait = [], [], []
    for _ in range(repeats):
        fwd.append(bench_forward(model, spec, n, batch, device, 1))
        r, _, w = bench_scan(model, spec, folder, layers, batch, 1, workers)
        scan.append(r)
        wait.append(w)
    return statistics.median(fwd), statistics.median(scan), n, statistics.median(wait)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes-images", type=int, default=512)
    ap.add_argument("--resnet-images", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-resnet", action="store_true")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    from cnnvis_gui.core.allocator import reuse_freed_memory        # as `cnnvis atlas` does at its start
    from cnnvis_gui.core.threads import openmp_waiting
    print(f"{openmp_waiting()}; malloc: {reuse_freed_memory()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ---- shapes demo model (64 x 64), or the same architecture at random init if not shipped yet
        try:
            from cnnvis_gui.models import demo
            lm = demo("shapes", device=str(device))
            model, spec, name = lm.model, lm.spec, "shapes demo 64x64"
        except Exception:
            from cnnvis_gui.models.demo_nets import ShapesNet
            model = ShapesNet().eval().to(device)
            spec = InputSpec(3, 64, 64, mean=(0.5,) * 3, std=(0.25,) * 3)
            name = "ShapesNet (random init) 64x64"
        make_folder(tmp / "shapes", args.shapes_images, 64, ".png")
        layers = ["features.10", "features.14", "output"]
        fwd, scan, n, wait = interleaved(model, spec, tmp / "shapes", layers, args.batch, device, args.repeats,
                                         args.workers)
        rows.append((name, n, args.batch, fwd, scan, wait))
        if not args.skip_resnet:
            import torchvision
            torch.manual_seed(0)
            model = torchvision.models.resnet18(weights=None).eval().to(device)
            spec = InputSpec(3, 224, 224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
            make_folder(tmp / "resnet", args.resnet_images, 256, ".jpg")
            b = min(args.batch, 32)
            fwd, scan, n, wait = interleaved(model, spec, tmp / "resnet", ["layer3", "layer4", "output"], b, device,
                                             args.repeats, args.workers)
            rows.append(("ResNet-18 (random init) 224x224", n, b, fwd, scan, wait))
    print(f"\ndevice: {device} ({torch.get_num_threads()} torch threads, {args.repeats} repeats, median)")
    print(f"{'model':34s} {'images':>6s} {'batch':>5s} {'forward img/s':>14s} {'scan img/s':>11s} {'ratio':>6s} "
          f"{'model waited':>12s}")
    for name, n, b, fwd, scan, wait in rows:
        print(f"{name:34s} {n:6d} {b:5d} {fwd:14.1f} {scan:11.1f} {scan / fwd:6.2f} {100 * wait:11.1f}%")
    print("(model waited: share of the scan's wall time the forward thread spent waiting for decoded batches)")


if __name__ == "__main__":
    main()
