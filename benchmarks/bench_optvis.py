"""Feature visualization on the real MobileNetV2: ours beside lucent (and horama's MACO), same units, same steps.

For every unit (class logits of the output and channels of mid layers) each method optimizes
one image for the same number of steps, on the same CPU, one torch thread each, the methods'
order alternating from unit to unit:

* ``ours`` -- ``cnnvis_gui.optvis`` with its defaults (``--ours fourier,maco,pixel`` adds the
  other parameterizations at the same settings);
* ``lucent`` -- ``lucent.optvis.render.render_vis(model, "layer:unit")`` with every default
  (128 x 128 Fourier image, decorrelated colour, ``standard_transforms``, Adam 0.05, the model
  used as its README shows: ``.eval()``, weights not frozen; ``--frozen-steps`` also times it
  with the weights frozen, which saves lucent their gradients);
* ``horama`` -- ``horama.maco`` with its defaults (1280 x 1280 image, 6 crops of 20-25 % per
  step, NAdam 1.0), given this project's natural-image magnitude (it downloads its own, and
  there is no internet here).  Optional: ``--peers lucent,horama``.

Peers run in a separate Python that has them (``--peer-python``; e.g. a scratch venv:
``python3 -m venv /tmp/optvis-peers && /tmp/optvis-peers/bin/pip install torch torchvision
torch-lucent horama``), never in the project's environment.

Every image is then measured by this script alone, with torchvision's own resampling (not
the optimizers' transforms): the unit's value for the image itself, its mean over
``--eval-n`` random transforms (shift +-16 px, scale 0.9-1.1, rotation +-10 degrees, the same
draws for every method; outside the image: the ImageNet mean colour), for class units the
rate of those transformed copies whose top-1 class is the unit, and the pixel standard
deviation of the image in [0, 1].  lucent's 128 x 128 image is measured at the model's
224 x 224 as its ``render_vis`` shows it to the model (bilinear, align_corners); horama's
1280 x 1280 image as its centre crop of the box size it trains on (22.5 %) at 224 x 224.
Time per step: process CPU time (one thread) of the optimization alone, divided by the steps.

    python benchmarks/bench_optvis.py [--steps 512] [--units output:281,...] [--peers lucent]
        [--ours fourier,maco,pixel] [--grid docs/images/optvis_grid.png] [--keep DIR]

Needs the real weights offline: ``eval "$(tools/realnet.sh /tmp/realnet)"`` or a TORCH_HOME
whose hub cache holds ``mobilenet_v2-b0353104.pth``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import affine

DEFAULT_UNITS = "output:281,output:1,output:130,features.10:5,features.13:20,features.16:30"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

PEER_RUNNER = r'''
import json, sys, time
import numpy as np, torch, torchvision
peer, layer, unit, steps, seed, threads, out = sys.argv[1:8]
unit, steps, seed, threads = int(unit), int(steps), int(seed), int(threads)
torch.set_num_threads(threads)
torch.manual_seed(seed); np.random.seed(seed)
m = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").eval()
if peer == "lucent-frozen":                                          # timing only: weights without gradients
    m.requires_grad_(False)
    peer = "lucent"
if peer == "lucent":
    from lucent.optvis import render
    name = "classifier_1" if layer == "output" else layer.replace(".", "_")
    c0, t0 = time.process_time(), time.perf_counter()
    img = render.render_vis(m, f"{name}:{unit}", thresholds=(steps,), show_image=False, progress=False)[-1][0]
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    img = np.ascontiguousarray(img, np.float32)                     # 128 x 128 x 3 in [0, 1]
elif peer == "horama":
    import os
    from horama import maco
    grab = {}
    if layer != "output":
        dict(m.named_modules())[layer].register_forward_hook(lambda mod, a, o: grab.__setitem__("a", o))
    def objective(x):
        out = m(x)
        return out[:, unit].mean() if layer == "output" else grab["a"][:, unit].mean()
    os.chdir(os.path.dirname(out))                                   # horama reads its spectrum from the cwd
    c0, t0 = time.process_time(), time.perf_counter()
    img, _ = maco(objective, total_steps=steps, device="cpu")
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    img = (img.detach() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float32)
else:
    raise SystemExit(f"unknown peer {peer}")
np.save(out, img)
print(json.dumps({"cpu_per_step": cpu / steps, "wall_per_step": wall / steps}))
'''


def _units(text):
    out = []
    for part in text.split(","):
        layer, unit = part.strip().rsplit(":", 1)
        out.append((layer, int(unit)))
    return out


class Meter:
    """The unit's value for images, read with a forward hook of this script's own."""

    def __init__(self, model):
        self.model = model

    def __call__(self, layer, unit, x01):
        """x01: N x 3 x 224 x 224 RGB in [0, 1] -> (values, top-1 classes)."""
        seen = {}
        h = None
        if layer != "output":
            h = dict(self.model.named_modules())[layer].register_forward_hook(
                lambda m, a, o: seen.__setitem__("a", o.detach()))
        try:
            with torch.no_grad():
                x = (x01 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
                out = self.model(x)
        finally:
            if h is not None:
                h.remove()
        val = out[:, unit] if layer == "output" else seen["a"][:, unit].flatten(1).mean(1)
        return val, out.argmax(1)


def eval_draws(n, seed=1234):
    g = np.random.default_rng(seed)
    return [dict(angle=float(g.uniform(-10, 10)), translate=[int(g.integers(-16, 17)), int(g.integers(-16, 17))],
                 scale=float(g.uniform(0.9, 1.1))) for _ in range(n)]


def measure(meter, layer, unit, img01, draws):
    """img01: 3 x 224 x 224 -> dict of the benchmark's numbers."""
    plain, _ = meter(layer, unit, img01[None])
    copies = torch.stack([affine(img01, shear=[0.0], interpolation=InterpolationMode.BILINEAR, fill=list(MEAN), **d)
                          for d in draws])
    vals, top = meter(layer, unit, copies)
    return {"value": float(plain[0]), "mean_t": float(vals.mean()),
            "top1": float((top == unit).float().mean()) if layer == "output" else float("nan"),
            "std": float(img01.std())}


def to_eval(method, img):
    """The image as the model sees it at 224 x 224: 3 x 224 x 224 in [0, 1]."""
    t = torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1)[None]
    if method == "lucent":
        t = F.interpolate(t, size=(224, 224), mode="bilinear", align_corners=True)
    elif method == "horama":
        s = t.shape[-1]
        box = int(round(s * 0.225))
        o = (s - box) // 2
        t = F.interpolate(t[..., o:o + box, o:o + box], size=(224, 224), mode="bilinear", antialias=True,
                          align_corners=False)
    return t[0].clamp(0, 1)


def variant(text) -> dict:
    """"fourier" or "fourier:decay=1.0:scale=0.9-1.1" -> RenderParams fields."""
    name, *opts = text.split(":")
    kw = {"param": name}
    for o in opts:
        k, v = o.split("=", 1)
        kw[k] = tuple(float(t) for t in v.split("-")) if "-" in v.lstrip("-") else float(v)
    return kw


def run_ours(model, layer, unit, steps, param, seed):
    from cnnvis_gui.core import InputSpec
    from cnnvis_gui.optvis import RenderParams, Renderer, channel, class_logit
    spec = InputSpec(3, 224, 224, MEAN, STD)
    params = RenderParams(max_iter=steps, seed=seed, **variant(param))
    obj = class_logit(unit, params.class_probability) if layer == "output" else channel(layer, unit)
    r = Renderer(model, spec, obj, [seed], params)
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in r.run(every=10 ** 9):
        pass
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return r.result.images[0].astype(np.float32) / 255.0, cpu / steps, wall / steps, r.result.description


def run_peer(python, peer, layer, unit, steps, seed, threads, workdir):
    out = Path(workdir) / f"{peer}_{layer}_{unit}.npy"
    runner = Path(workdir) / "peer_runner.py"
    runner.write_text(PEER_RUNNER)
    r = subprocess.run([python, str(runner), peer, layer, str(unit), str(steps), str(seed), str(threads), str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{peer} failed on {layer}:{unit}: {r.stderr.strip().splitlines()[-1:]}")
    t = json.loads(r.stdout.strip().splitlines()[-1])
    return np.load(out), t["cpu_per_step"], t["wall_per_step"]


def write_horama_spectrum(workdir):
    from cnnvis_gui.optvis.spectrum import natural_magnitude
    np.save(Path(workdir) / "spectrum_decorrelated.npy", natural_magnitude(1280, 1280).numpy().astype(np.float32))


def _kept_name(method, layer, unit) -> str:
    return f"kept_{method.replace(' ', '_').replace('(', '').replace(')', '').replace(':', '_')}_{layer}_{unit}.npy"


def label_of(layer, unit, categories):
    if layer == "output":
        return f"class {unit} '{categories[unit]}'"
    return f"{layer} channel {unit}"


PEER_TITLES = {"lucent": "lucent render_vis, defaults", "horama": "horama maco, defaults"}


def title(method: str) -> str:
    """A grid column's title: "ours (fourier)" -> "ours: cnnvis optimize, defaults"."""
    if method.startswith("ours ("):
        v = method[len("ours ("):-1]
        return "ours: cnnvis optimize, " + ("defaults" if v == "fourier" else v)
    return PEER_TITLES.get(method, method)


def write_grid(path, rows, methods, images):
    """rows: [(layer, unit, label)], images[(method, layer, unit)] = H x W x 3 in [0, 1]."""
    cell, pad, head = 224, 6, 26
    w = len(methods) * (cell + pad) + 190
    h = head + len(rows) * (cell + pad)
    canvas = np.full((h, w, 3), 255, np.uint8)
    for j, m in enumerate(methods):
        cv2.putText(canvas, title(m), (190 + j * (cell + pad) + 4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0),
                    1, cv2.LINE_AA)
    for i, (layer, unit, label) in enumerate(rows):
        y = head + i * (cell + pad)
        for k, line in enumerate(label.split(" '")):
            cv2.putText(canvas, line if k == 0 else "'" + line, (6, y + 100 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (0, 0, 0), 1, cv2.LINE_AA)
        for j, m in enumerate(methods):
            img = images.get((m, layer, unit))
            if img is None:
                continue
            u8 = np.clip(np.rint(np.asarray(img) * 255), 0, 255).astype(np.uint8)
            u8 = cv2.resize(u8, (cell, cell), interpolation=cv2.INTER_AREA if u8.shape[0] > cell else cv2.INTER_LINEAR)
            x = 190 + j * (cell + pad)
            canvas[y:y + cell, x:x + cell] = u8
    cv2.imwrite(str(path), canvas[..., ::-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--units", default=DEFAULT_UNITS, help="LAYER:UNIT,... (output:K = class K's logit)")
    ap.add_argument("--ours", default="fourier",
                    help="our variants to run, comma-separated: a parameterization, optionally with settings "
                         "(fourier:decay=1.0:scale=0.9-1.1); the first is 'ours' in the summary and the grid")
    ap.add_argument("--peers", default="lucent", help="lucent,horama (empty: none)")
    ap.add_argument("--peer-python", default="/tmp/optvis-peers/bin/python")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-n", type=int, default=32, help="random transforms per image in the evaluation")
    ap.add_argument("--frozen-steps", type=int, default=32,
                    help="also time lucent with the model's weights frozen (requires_grad False) for this many "
                         "steps per unit: the time per step of a lucent user who freezes them (0: skip)")
    ap.add_argument("--grid", default="", help="write the image grid here (PNG)")
    ap.add_argument("--keep", default="", help="keep every image (.npy) in this folder")
    ap.add_argument("--grid-only", action="store_true",
                    help="only draw --grid again from the images a run kept in --keep (no optimization)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    weights = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    model = torchvision.models.mobilenet_v2(weights=weights).eval()
    categories = weights.meta["categories"]
    meter = Meter(model)
    draws = eval_draws(args.eval_n)
    units = _units(args.units)
    ours = [p for p in args.ours.split(",") if p]
    peers = [p for p in args.peers.split(",") if p]
    methods = [f"ours ({p})" for p in ours] + peers
    results, images, desc = {}, {}, {}
    if args.grid_only:
        for layer, unit in units:
            for m in methods:
                images[(m, layer, unit)] = np.load(Path(args.keep) / _kept_name(m, layer, unit))
        write_grid(args.grid, [(l, u, label_of(l, u, categories)) for l, u in units], methods, images)
        print(f"grid -> {args.grid}")
        return
    workdir = args.keep or tempfile.mkdtemp(prefix="bench_optvis_")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    if "horama" in peers:
        write_horama_spectrum(workdir)
    for i, (layer, unit) in enumerate(units):
        order = methods if i % 2 == 0 else methods[::-1]
        for m in order:
            if m.startswith("ours"):
                p = m[len("ours ("):-1]
                img, cpu, wall, desc[m] = run_ours(model, layer, unit, args.steps, p, args.seed)
            else:
                img, cpu, wall = run_peer(args.peer_python, m, layer, unit, args.steps, args.seed, args.threads,
                                          workdir)
            images[(m, layer, unit)] = img
            if args.keep:
                np.save(Path(workdir) / _kept_name(m, layer, unit), img)
            r = measure(meter, layer, unit, to_eval(m, img), draws)
            r.update(cpu_ms=cpu * 1000, wall_ms=wall * 1000)
            if m == "lucent" and args.frozen_steps:
                _, fcpu, _ = run_peer(args.peer_python, "lucent-frozen", layer, unit, args.frozen_steps, args.seed,
                                      args.threads, workdir)
                r["frozen_cpu_ms"] = fcpu * 1000
            results[(m, layer, unit)] = r
            print(f"  {label_of(layer, unit, categories)}, {m}: value {r['value']:.3g}, under transforms "
                  f"{r['mean_t']:.3g}, top-1 {r['top1']:.2f}, std {r['std']:.3f}, {r['cpu_ms']:.0f} ms CPU/step",
                  file=sys.stderr, flush=True)

    try:
        load = "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    except (OSError, AttributeError):
        load = "load average ?"
    print(f"MobileNetV2 IMAGENET1K_V1, {args.steps} steps, torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.eval_n} random transforms per image (shift ±16 px, scale 0.9-1.1, rotation ±10°); {load}")
    import cnnvis_gui
    print(f"ours: cnnvis_gui from {Path(cnnvis_gui.__file__).parent}")
    for m, d in desc.items():
        print(f"{m}: {d}")
    ref = "lucent" if "lucent" in peers else None
    head = f"{'unit':34s} {'method':16s} {'value':>8s} {'under tf':>9s} {'top-1 tf':>9s} {'px std':>7s} " \
           f"{'CPU ms/step':>12s} {'vs lucent':>10s}"
    print(head)
    for layer, unit in units:
        for m in methods:
            r = results[(m, layer, unit)]
            ratio = r["cpu_ms"] / results[(ref, layer, unit)]["cpu_ms"] if ref else float("nan")
            top = "-" if math.isnan(r["top1"]) else f"{r['top1']:.2f}"
            print(f"{label_of(layer, unit, categories):34s} {m:16s} {r['value']:8.3g} {r['mean_t']:9.3g} {top:>9s} "
                  f"{r['std']:7.3f} {r['cpu_ms']:12.0f} {ratio:9.2f}x")
    if ref:
        first = methods[0]
        wins = [all(results[(first, l, u)][k] > results[(ref, l, u)][k] for k in ("mean_t",)) and
                (l != "output" or results[(first, l, u)]["top1"] >= results[(ref, l, u)]["top1"]) and
                results[(first, l, u)]["std"] >= 0.10 for l, u in units]
        ratios = [results[(first, l, u)]["cpu_ms"] / results[(ref, l, u)]["cpu_ms"] for l, u in units]
        print(f"{first} beats lucent on {sum(wins)} of {len(units)} units (higher mean under transforms, top-1 rate "
              f"at least lucent's for classes, pixel std >= 0.10); median CPU time per step "
              f"{float(np.median(ratios)):.2f}x lucent's")
        frozen = [results[(first, l, u)]["cpu_ms"] / results[(ref, l, u)]["frozen_cpu_ms"] for l, u in units
                  if "frozen_cpu_ms" in results[(ref, l, u)]]
        if frozen:
            print(f"  and {float(np.median(frozen)):.2f}x lucent's with the model's weights frozen (requires_grad "
                  f"False; {args.frozen_steps} steps per unit, timing only)")
    if args.grid:
        rows = [(l, u, label_of(l, u, categories)) for l, u in units]
        write_grid(args.grid, rows, methods, images)
        print(f"grid -> {args.grid}")


if __name__ == "__main__":
    main()
