"""Network dissection throughput against the bare no-grad forward of the same model and batch size.

    python benchmarks/bench_dissect.py [--device cpu|cuda] [--repeats 3] [--shapes-images 400] [--resnet-images 64]

For each model, alternating runs (after one warm-up of each) measure:

* forward: ``model(x)`` under ``torch.no_grad`` on batches already in memory (no decode): the floor;
* read + forward: the simplest loop over the same files, for scale: ``cv2.imread`` each image,
  stack, normalize, ``model(x)``, one batch after the other in one thread (no checks, no hooks,
  no store): what any script that reads these images pays;
* scan: pass 1 of :class:`cnnvis_gui.dissect.Dissection` (decode images, check every mask's header,
  normalize, forward with the hooks, unit maps into the activation store), cache off;
* dissection: the whole of it (pass 1, the exact thresholds from the store, the tally that
  upsamples the stored maps to every mask): what ``cnnvis dissect`` costs end to end.

Every ratio is taken within one round (the scan's rate over the forward's measured just before it)
and the median over the rounds is printed with its range: the bare forward's own rate swings by
tens of percent between rounds on a shared machine, and a ratio of medians taken apart mixes
rounds.

Like ``cnnvis dissect`` and the window, the benchmark tunes glibc's malloc so that freed tensor
memory is reused (:mod:`cnnvis_gui.core.allocator`; ``CNNVIS_MALLOC=system`` leaves it alone):
the scan holds every dissected layer's output of a batch (the demo's ``features.2`` is 16 MB a
batch), which with the stock settings is mapped afresh and page-faulted in at every batch.
``cnnvis_gui`` is imported before torch, so OpenMP's threads sleep while they wait, as in the
app and the command line (:mod:`cnnvis_gui.core.threads`); spinning threads (torch first, or
``CNNVIS_OPENMP_WAIT=default``) slow the bare forward several-fold on a machine whose cores
other jobs hold, and the scan's loader threads change how much they spin, so the ratio would
measure the spinning.  Besides the rates it prints the process CPU time per image of the bare
forward and of the scan (all of the process's threads): on a machine whose cores are all busy
the scan's rate follows the ratio of the two, whatever the load; the rates swing with it.

Models: the shapes demo on its own concept set (64 x 64 images, 64 x 64 masks with the shape,
colour and texture categories; four layers from 64 x 64 to 8 x 8 maps), and torchvision's
ResNet-18 (random init) at 224 x 224 on a generated simple-format concept folder (224 x 224 masks;
``layer3`` 14 x 14 and ``layer4`` 7 x 7).  Prints images/s and ratios (scan target >= 0.8) and the
load average; never part of the test pass/fail.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cnnvis_gui  # noqa: E402,F401  (before torch: OpenMP waits as in the app, see cnnvis_gui.core.threads)
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_atlas import bench_forward as _forward  # noqa: E402  (the atlas benchmark's floor)

from cnnvis_gui.core import IMAGENET_MEAN, IMAGENET_STD, InputSpec  # noqa: E402
from cnnvis_gui.core.allocator import reuse_freed_memory  # noqa: E402
from cnnvis_gui.core.threads import openmp_waiting  # noqa: E402
from cnnvis_gui.dissect import Dissection  # noqa: E402


def make_concepts(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """A simple-format concept folder: discs and boxes of 6 colours (label map: the colour's id)."""
    rng = np.random.default_rng(seed)
    colours = [(30, 30, 220), (40, 200, 40), (220, 60, 30), (30, 220, 230), (200, 40, 200), (240, 240, 240)]
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.clip(rng.normal(110, 30, (size, size, 3)), 0, 255).astype(np.uint8)
        lab = np.zeros((size, size), np.uint8)
        for _ in range(4):
            k = int(rng.integers(len(colours)))
            m = np.zeros((size, size), np.uint8)
            x, y = (int(v) for v in rng.integers(0, size, 2))
            r = int(rng.integers(size // 16, size // 5))
            if rng.random() < 0.5:
                cv2.circle(m, (x, y), r, 1, -1)
            else:
                cv2.rectangle(m, (x - r, y - r), (x + r, y + r), 1, -1)
            img[m > 0] = colours[k]
            lab[m > 0] = k + 1
        cv2.imwrite(str(root / "images" / f"im{i:05d}.jpg"), img)
        cv2.imwrite(str(root / "masks" / f"im{i:05d}.png"), lab)
    (root / "labels.csv").write_text("id,name,category\n" + "".join(
        f"{k + 1},{n},color\n" for k, n in enumerate(["red", "green", "blue", "yellow", "magenta", "white"])))
    return root


def bench_forward(model, spec, n, batch, device):
    """(images/s, process CPU ms per image) of the bare ``no_grad`` forward on batches already in memory."""
    c0 = time.process_time()
    rate = _forward(model, spec, n, batch, device, 1)
    return rate, (time.process_time() - c0) * 1000 / n


def bench_read_forward(model, spec, concepts, batch, device):
    """images/s of the simplest loop over the same image files: imread, stack, normalize, forward."""
    from cnnvis_gui.atlas.sweep import normalize_batch
    from cnnvis_gui.dissect.formats import open_concepts
    cs = open_concepts(concepts)
    paths = [os.path.join(cs.root, im.image) for im in cs.images]
    dtype = next(model.parameters()).dtype
    t0 = time.perf_counter()
    with torch.no_grad():
        for a in range(0, len(paths), batch):
            arr = np.stack([cv2.imread(p, cv2.IMREAD_COLOR) for p in paths[a:a + batch]])
            model(normalize_batch(spec, torch.from_numpy(arr).to(device), dtype))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(paths) / (time.perf_counter() - t0)


def bench_dissect(model, spec, concepts, layers, batch, workers):
    """(scan images/s, whole dissection images/s, seconds per phase, scan's process CPU ms per image)."""
    d = Dissection(model, spec, concepts, layers, batch_size=batch, use_cache=False, workers=workers)
    n = d.total
    with d.opened() as (st, stores):
        t0 = time.perf_counter()
        c0 = time.process_time()
        for _ in d.activations(st, stores):
            pass
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        cpu = (time.process_time() - c0) * 1000 / n
        thresholds = d.thresholds(d.summaries(st, stores))
        t2 = time.perf_counter()
        for _ in d.tally(st, stores, thresholds):
            pass
        t3 = time.perf_counter()
    return n / (t1 - t0), n / (t3 - t0), (t1 - t0, t2 - t1, t3 - t2), cpu


def run(name, model, spec, concepts, layers, n, batch, device, repeats, workers):
    model = model.to(device).eval()
    bench_forward(model, spec, min(n, 2 * batch), batch, device)             # warm-up
    bench_read_forward(model, spec, concepts, batch, device)
    bench_dissect(model, spec, concepts, layers, batch, workers)
    rows = []
    for _ in range(repeats):
        f, fc = bench_forward(model, spec, n, batch, device)
        r = bench_read_forward(model, spec, concepts, batch, device)
        s, w, p, sc = bench_dissect(model, spec, concepts, layers, batch, workers)
        rows.append((f, r, s, w, p, fc, sc))
    med = lambda i: statistics.median(x[i] for x in rows)                  # noqa: E731
    ratio = lambda i, j: sorted(x[i] / x[j] for x in rows)                 # noqa: E731
    sf, wf, rf, sr = ratio(2, 0), ratio(3, 0), ratio(1, 0), ratio(2, 1)
    rng = lambda v: f"{statistics.median(v):.2f} ({v[0]:.2f}-{v[-1]:.2f})"  # noqa: E731
    p = [statistics.median(x[4][i] for x in rows) for i in range(3)]
    print(f"{name:<34} {n:>6} {batch:>5} {med(0):>9.1f} {med(1):>9.1f} {med(2):>9.1f} {med(3):>9.1f}   "
          f"s: {p[0]:.2f} / {p[1]:.2f} / {p[2]:.2f}   CPU ms/img: {med(5):.2f} / {med(6):.2f}", flush=True)
    print(f"    ratios to the forward: scan {rng(sf)}, whole {rng(wf)}, read+forward {rng(rf)}; "
          f"scan to read+forward {rng(sr)}", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shapes-images", type=int, default=400)
    ap.add_argument("--resnet-images", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-resnet", action="store_true")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    malloc = reuse_freed_memory()               # as `cnnvis dissect` and the window do at their start
    omp = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT")
                   if k in os.environ)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}{', ' + omp if omp else ''}; "
          f"{openmp_waiting()}; malloc: {malloc}")
    print(f"{'model':<34} {'images':>6} {'batch':>5} {'forward':>9} {'read+fwd':>9} {'scan':>9} {'whole':>9}   "
          f"(images/s, medians; ratios: median of the rounds' ratios (range); seconds of scan / thresholds / "
          f"tally; process CPU ms an image of forward / scan)")
    with tempfile.TemporaryDirectory() as tmp:
        from cnnvis_gui.dissect.demo import DEMO_LAYERS, demo_concepts_folder, draw_demo_concepts
        from cnnvis_gui.models import demo
        lm = demo("shapes", device="cpu")
        folder = demo_concepts_folder(args.shapes_images, cache_dir=tmp)
        for _ in draw_demo_concepts(folder, args.shapes_images):
            pass
        layers = ["features.2", "features.6", "features.10", "features.14"]
        run("shapes demo 64x64 (4 layers)", lm.model, lm.spec, folder, layers, args.shapes_images, 64, device,
            args.repeats, args.workers)
        run("shapes demo 64x64 (features.14)", lm.model, lm.spec, folder, ["features.14"], args.shapes_images, 64,
            device, args.repeats, args.workers)
        if not args.skip_resnet:
            import torchvision
            spec = InputSpec(3, 224, 224, mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order="RGB", scale=1 / 255)
            concepts = make_concepts(Path(tmp) / "resnet-concepts", args.resnet_images, 224)
            torch.manual_seed(0)
            net = torchvision.models.resnet18()
            run("ResNet-18 (random init) 224x224", net, spec, concepts, ["layer3", "layer4"], args.resnet_images, 32,
                device, args.repeats, args.workers)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
