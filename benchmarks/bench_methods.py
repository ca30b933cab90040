"""Every saliency and CAM method beside the library a researcher would otherwise use, in one run.

One row per method (ResNet-18, random init, 1 x 3 x 224 x 224 by default, CPU, target: one class
of the output), each computing the *same* output with both libraries from a new input (forward
included):

* gradient, deconvnet, guided, input-x-gradient, integrated-gradients (``--steps``), SmoothGrad
  of the gradient (``--smoothgrad`` copies) -- captum (``Saliency(abs=False)``, ``Deconvolution``,
  ``GuidedBackprop``, ``InputXGradient``, ``IntegratedGradients``, ``NoiseTunnel``);
* gradcam, hirescam, xgradcam, layercam, gradcam++, scorecam, eigencam at ``layer4`` --
  pytorch-grad-cam (``pip install grad-cam``; kept out of the project's environment: run this
  script with a scratch venv's python that has it, e.g. ``python -m venv --system-site-packages``).

The cases are interleaved round-robin (ours and peer of a row back to back, their order alternating,
the row order rotating every round) and each reports the median of
the process's CPU time (all threads), which other jobs on a shared machine disturb less than wall
time; compare the ratios, not the milliseconds.  ``agree`` is the correlation between the two
outputs (for the CAMs after each library's own upsampling), so a row compares like with like
(``nan`` for SmoothGrad: each library draws its own noise).

    python benchmarks/bench_methods.py [--size 224] [--repeats 5] [--slow-repeats 2] [--threads 1]
                                       [--steps 32] [--smoothgrad 16] [--only gradcam,scorecam]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch
import torchvision

from cnnvis_gui.core import Visualizer

SLOW = ("integrated-gradients", "smoothgrad", "scorecam")


def _cpu_ms(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, (time.process_time() - c0) * 1000.0, out


def _np(a):
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, np.float64)


def _corr(a, b) -> float:
    a, b = _np(a).ravel(), _np(b).ravel()
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--slow-repeats", type=int, default=2, help="repeats of the rows that run many forwards")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: leave the default)")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--smoothgrad", type=int, default=16)
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--unit", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated rows to run (default: all)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, args.size, args.size)
    u = args.unit
    vis = Visualizer(model)

    def ours_saliency(method, **kw):
        def run():
            with vis.forward(x) as f:
                return f.saliency("fc", u, method, **kw)
        return run

    def ours_cam(method):
        def run():
            with vis.forward(x) as f:
                return f.cam("fc", u, "layer4", method=method)[0]
        return run

    rows = {}   # name -> (ours, peer name, peer fn or None)
    from captum.attr import (Deconvolution, GuidedBackprop, InputXGradient, IntegratedGradients, NoiseTunnel,
                             Saliency)

    def captum(cls, **kw):
        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls(model).attribute(x.clone(), target=u, **kw)
        return run

    sigma = args.noise * float(x.max() - x.min())

    def captum_smooth():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return NoiseTunnel(Saliency(model)).attribute(x.clone(), target=u, nt_type="smoothgrad",
                                                           nt_samples=args.smoothgrad, stdevs=sigma, abs=False)

    rows["gradient"] = (ours_saliency("gradient"), "captum Saliency", captum(Saliency, abs=False))
    rows["deconvnet"] = (ours_saliency("deconvnet"), "captum Deconvolution", captum(Deconvolution))
    rows["guided"] = (ours_saliency("guided"), "captum GuidedBackprop", captum(GuidedBackprop))
    rows["input-x-gradient"] = (ours_saliency("input-x-gradient"), "captum InputXGradient", captum(InputXGradient))
    rows["integrated-gradients"] = (ours_saliency("integrated-gradients", steps=args.steps),
                                    f"captum IntegratedGradients n_steps={args.steps}",
                                    captum(IntegratedGradients, n_steps=args.steps))
    rows["smoothgrad"] = (ours_saliency("gradient", smoothgrad=args.smoothgrad, noise=args.noise, seed=0),
                          f"captum NoiseTunnel(Saliency) x{args.smoothgrad}", captum_smooth)

    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
        peers = {"gradcam": pgc.GradCAM, "hirescam": pgc.HiResCAM, "xgradcam": pgc.XGradCAM,
                 "layercam": pgc.LayerCAM, "gradcam++": pgc.GradCAMPlusPlus, "scorecam": pgc.ScoreCAM,
                 "eigencam": pgc.EigenCAM}
        gradcam_note = ""
    except ImportError as e:
        peers, gradcam_note = {}, f"pytorch-grad-cam not importable here ({e}); CAM rows without a peer"

    def pgc_run(cls):
        def run():
            import contextlib
            import io
            with cls(model=model, target_layers=[model.layer4]) as c, contextlib.redirect_stderr(io.StringIO()):
                return c(input_tensor=x.clone(), targets=[ClassifierOutputTarget(u)])[0]
        return run

    for m in ("gradcam", "hirescam", "xgradcam", "layercam", "gradcam++", "scorecam", "eigencam"):
        cls = peers.get(m)
        rows[m] = (ours_cam(m), f"pytorch-grad-cam {cls.__name__}" if cls else "-", pgc_run(cls) if cls else None)

    if args.only:
        keep = [r.strip() for r in args.only.split(",")]
        rows = {k: v for k, v in rows.items() if k in keep}

    agree = {}
    for name, (ours, _, peer) in rows.items():   # warm-up, and the outputs compared
        a = ours()
        # SmoothGrad: each library draws its own random noise, so the two maps differ by design
        agree[name] = _corr(a, peer()) if peer and name != "smoothgrad" else float("nan")
    cpu = {k: ([], []) for k in rows}
    wall = {k: ([], []) for k in rows}
    names = list(rows)
    for r in range(max(args.repeats, args.slow_repeats)):
        # rotate the row order and alternate which side goes first, so that no case always
        # follows the same (cache-evicting) neighbour
        for name in names[r % len(names):] + names[:r % len(names)]:
            ours, _, peer = rows[name]
            if r >= (args.slow_repeats if name in SLOW else args.repeats):
                continue
            sides = [(0, ours), (1, peer)]
            for side, fn in (sides if r % 2 == 0 else sides[::-1]):
                if fn is None:
                    continue
                w, c, _ = _cpu_ms(fn)
                wall[name][side].append(w)
                cpu[name][side].append(c)

    load = ""
    try:
        load = f", load average {os.getloadavg()[0]:.1f}"
    except (OSError, AttributeError):
        pass
    print(f"ResNet-18 (random init), input 1x3x{args.size}x{args.size}, target fc unit {u}, CAM layer 'layer4', "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), medians of {args.repeats} "
          f"({args.slow_repeats} for {', '.join(SLOW)}){load}")
    if gradcam_note:
        print(gradcam_note)
    print(f"{'method':22s} {'ours CPU ms':>12s} {'peer CPU ms':>12s} {'peer/ours':>10s} {'agree':>7s}  peer")
    for name, (_, peer_name, peer) in rows.items():
        o = statistics.median(cpu[name][0])
        p = statistics.median(cpu[name][1]) if cpu[name][1] else float("nan")
        print(f"{name:22s} {o:12.1f} {p:12.1f} {p / o:9.2f}x {agree[name]:7.4f}  {peer_name}")
    try:
        load = f"{os.getloadavg()[0]:.1f}"
        print(f"load average at the end: {load}")
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    main()
