"""Engine speed against the bare-PyTorch floor, measured in one run.

Rows (ResNet-18, random init, 1 x 3 x 224 x 224 by default, CPU; ``--model shapes`` for a demo model):

* bare autograd      -- forward with parameters frozen + torch.autograd.grad to the input
* ours: new frame    -- Visualizer.forward + one guided-backprop saliency
* bare backward-only -- torch.autograd.grad on an already-built graph (retain_graph=True)
* ours: unit switch  -- another unit's guided saliency on the same Frame (backward only)
* captum             -- captum's NeuronGuidedBackprop (forward + backward each call)

The cases are interleaved round-robin and each reports the median, so the shared,
noisy machine affects them alike.  Two clocks: wall time, and the process's CPU time
(all its threads), which other processes on a shared machine disturb much less; the
ratios are computed on CPU time on the CPU device.  Compare the ratios, not the
milliseconds.

    python benchmarks/bench_engine.py [--model resnet18|shapes|glyphs] [--size 224] [--repeats 15] [--layer fc] [--device cpu]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torchvision

from cnnvis_gui.core import Visualizer


def _timeit(fn, sync):
    """(wall ms, process CPU ms) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1000.0, (time.process_time() - c0) * 1000.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--model", default="resnet18",
                    help="'resnet18' (torchvision, random init) or a demo name ('shapes', 'glyphs')")
    ap.add_argument("--layer", default=None, help="target layer (default: the classifier output)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--no-captum", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    if args.model == "resnet18":
        model = torchvision.models.resnet18().eval().to(dev)
        shape = (3, args.size, args.size)
        args.layer = args.layer or "fc"
        title = f"ResNet-18, input 1x3x{args.size}x{args.size}"
    else:
        from cnnvis_gui.models import demo
        lm = demo(args.model)
        model = lm.model.to(dev)
        shape = lm.spec.shape
        args.layer = args.layer or [n for n, _ in model.named_modules()][-1]
        title = f"demo '{args.model}', input 1x{'x'.join(map(str, shape))}"
    frozen = copy.deepcopy(model).requires_grad_(False)
    x = torch.randn((1,) + tuple(shape), device=dev)
    layer_mod = dict(model.named_modules())[args.layer]
    vis = Visualizer(model)
    units = [3, 7]

    def unit_obj(o, u):
        return o[:, u].sum()

    # bare: forward (params frozen) + grad to the input
    def bare():
        store = {}
        h = dict(frozen.named_modules())[args.layer].register_forward_hook(lambda m, a, o: store.__setitem__("o", o))
        try:
            xr = x.clone().requires_grad_(True)
            frozen(xr)
            torch.autograd.grad(unit_obj(store["o"], units[0]), xr)
        finally:
            h.remove()

    # bare backward-only on a retained graph
    store = {}
    h = dict(frozen.named_modules())[args.layer].register_forward_hook(lambda m, a, o: store.__setitem__("o", o))
    xr_kept = x.clone().requires_grad_(True)
    frozen(xr_kept)
    h.remove()
    kept = store["o"]

    def bare_backward():
        torch.autograd.grad(unit_obj(kept, units[1]), xr_kept, retain_graph=True)

    def ours_new():
        f = vis.forward(x)
        f.saliency(args.layer, units[0], "guided")
        f.close()

    frame = vis.forward(x)

    def ours_switch():
        frame.saliency(args.layer, units[1], "guided")

    cases = {
        "bare autograd (forward + grad)": bare,
        "ours: new frame (forward + guided)": ours_new,
        "bare backward-only (retained graph)": bare_backward,
        "ours: unit switch (guided, same frame)": ours_switch,
    }
    if not args.no_captum:
        from captum.attr import NeuronGuidedBackprop
        ngb = NeuronGuidedBackprop(model, layer_mod)

        def captum_gb():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ngb.attribute(x.clone(), neuron_selector=lambda o: o[:, units[0]].reshape(o.shape[0], -1).sum(1))
        cases["captum NeuronGuidedBackprop"] = captum_gb

    for fn in cases.values():  # warm-up
        fn()
        fn()
    sync()
    times = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    for _ in range(args.repeats):
        for k, fn in cases.items():
            w, c = _timeit(fn, sync)
            times[k].append(w)
            cpu[k].append(c)
    wall = {k: statistics.median(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in cpu.items()} if dev.type == "cpu" else wall
    clock = "CPU ms" if dev.type == "cpu" else "wall ms"

    bare_ms = med["bare autograd (forward + grad)"]
    back_ms = med["bare backward-only (retained graph)"]
    load = ""
    try:
        import os
        load = f", load average {os.getloadavg()[0]:.1f}"
    except (OSError, AttributeError):
        pass
    print(f"{title}, target {args.layer!r}, device {dev}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}{load}")
    print(f"{'case':40s} {'wall ms':>9s} {'CPU ms':>9s} {'vs bare':>8s} {'vs bare bwd':>12s}")
    for k in cases:
        c = cpu[k] and statistics.median(cpu[k])
        print(f"{k:40s} {wall[k]:9.2f} {c:9.2f} {med[k] / bare_ms:7.2f}x {med[k] / back_ms:11.2f}x")
    new_ratio = med["ours: new frame (forward + guided)"] / bare_ms
    sw_ratio = med["ours: unit switch (guided, same frame)"] / back_ms
    print(f"\nratios on {clock}: new frame / bare = {new_ratio:.2f}x (target <= 1.10x); "
          f"unit switch / bare backward-only = {sw_ratio:.2f}x (target <= 1.10x)")
    if "captum NeuronGuidedBackprop" in med:
        c = med["captum NeuronGuidedBackprop"]
        print(f"captum / ours new frame = {c / med['ours: new frame (forward + guided)']:.2f}x; "
              f"captum / ours unit switch = {c / med['ours: unit switch (guided, same frame)']:.2f}x")

if __name__ == "__main__":
    main()
