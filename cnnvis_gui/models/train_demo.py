"""Train the shipped demo models on datasets generated here (no downloads).

Usage::

    python -m cnnvis_gui.models.train_demo shapes|glyphs|all [--epochs N] [--quick] [--out DIR]

* **shapes** -- RGB 64 x 64, 10 procedurally drawn figures (see ``SHAPES_LABELS``) in random
  colours, sizes, positions and rotations over noisy, gradient or blurred-noise backgrounds.
* **glyphs** -- grayscale 28 x 28, MNIST-like digits 0-9 drawn with OpenCV's Hershey fonts at
  random thickness, scale, rotation, shear, position and noise.

Everything is seeded, so a run reproduces the shipped checkpoint's accuracy.  The script
prints the accuracy on a held-out generated set, writes ``<out>/models/<name>.pth`` (a
checkpoint ``{"state_dict": ..., "cnnvis": {spec, labels, name, arch, arch_kwargs}}``),
one correctly classified sample image per class to ``<out>/samples/<name>/NN_label.png``
and the training log to ``<out>/models/TRAINING.md``.  ``<out>`` defaults to ``assets/``.
"""
from __future__ import annotations

import argparse
import math
import platform
import re
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..core import InputSpec
from .demo_nets import GlyphsNet, ShapesNet, SHAPES_LABELS, GLYPHS_LABELS

SHAPES_SPEC = InputSpec(channels=3, height=64, width=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                        channel_order="RGB", scale=1 / 255)
GLYPHS_SPEC = InputSpec(channels=1, height=28, width=28, mean=(0.15,), std=(0.3,), channel_order="RGB",
                        scale=1 / 255)


# ----------------------------------------------------------------------------- shapes
def _shape_mask(label: int, rng: np.random.Generator) -> np.ndarray:
    """Float mask in [0, 1], 64 x 64, drawn at 2x and area-downsampled (anti-aliased)."""
    S = 128
    r = rng.uniform(11, 24) * 2
    m = r + 4
    cx, cy = rng.uniform(m, S - m), rng.uniform(m, S - m)
    ang = rng.uniform(0, 2 * np.pi)
    mask = np.zeros((S, S), np.uint8)
    name = SHAPES_LABELS[label]

    def poly(points):
        pts = np.asarray(points, np.float64)
        c, s = np.cos(ang), np.sin(ang)
        rot = pts @ np.array([[c, s], [-s, c]]) + (cx, cy)
        cv2.fillPoly(mask, [np.round(rot * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)

    if name == "circle":
        cv2.circle(mask, (round(cx * 16), round(cy * 16)), round(r * 16), 255, -1, cv2.LINE_AA, shift=4)
    elif name == "ring":
        t = r * rng.uniform(0.25, 0.4)
        cv2.circle(mask, (round(cx * 16), round(cy * 16)), round((r - t / 2) * 16), 255, max(2, round(t)),
                   cv2.LINE_AA, shift=4)
    elif name == "crescent":
        cv2.circle(mask, (round(cx * 16), round(cy * 16)), round(r * 16), 255, -1, cv2.LINE_AA, shift=4)
        d = r * rng.uniform(0.45, 0.6)
        ox, oy = cx + d * np.cos(ang), cy + d * np.sin(ang)
        cv2.circle(mask, (round(ox * 16), round(oy * 16)), round(r * 0.9 * 16), 0, -1, cv2.LINE_AA, shift=4)
    elif name == "square":
        h = r * 0.8
        poly([(-h, -h), (h, -h), (h, h), (-h, h)])
    elif name == "triangle":
        poly([(r * np.cos(a), r * np.sin(a)) for a in (np.pi / 2 + np.arange(3) * 2 * np.pi / 3)])
    elif name == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.42
            a = np.pi / 2 + k * np.pi / 5
            pts.append((rr * np.cos(a), rr * np.sin(a)))
        poly(pts)
    elif name == "cross":
        w = r * rng.uniform(0.22, 0.32)
        poly([(-r, -w), (r, -w), (r, w), (-r, w)])
        poly([(-w, -r), (w, -r), (w, r), (-w, r)])
    else:  # stripes / checkerboard: a patterned square patch, only slightly rotated
        a = rng.uniform(-0.2, 0.2)
        yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        h = r * 0.85
        period = 2 * h / rng.choice([3, 4, 5]) if name != "checkerboard" else 2 * h / rng.choice([3, 4])
        inside = (np.abs(u) < h) & (np.abs(v) < h)
        if name == "hstripes":
            on = np.floor((v + h) / (period / 2)).astype(int) % 2 == 0
        elif name == "vstripes":
            on = np.floor((u + h) / (period / 2)).astype(int) % 2 == 0
        else:
            on = np.floor((u + h) / period).astype(int) % 2 == np.floor((v + h) / period).astype(int) % 2
        mask = (inside & on).astype(np.uint8) * 255
    return cv2.resize(mask, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


#: the three kinds of background :func:`_background` draws, by the number it draws first
BACKGROUNDS = ("flat", "gradient", "blotchy")


def _background(rng: np.random.Generator) -> tuple:
    """(64 x 64 x 3 float32 BGR background, its kind: an index into :data:`BACKGROUNDS`)."""
    kind = rng.integers(3)
    base = rng.uniform(0, 255, 3)
    if kind == 0:
        bg = np.broadcast_to(base, (64, 64, 3)).astype(np.float32)
    elif kind == 1:
        other = rng.uniform(0, 255, 3)
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:64, 0:64] / 63.0
        t = ((xx - 0.5) * np.cos(a) + (yy - 0.5) * np.sin(a) + 0.7) / 1.4
        bg = (base * (1 - t[..., None]) + other * t[..., None]).astype(np.float32)
    else:
        n = rng.normal(0, 1, (64, 64, 3)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), rng.uniform(2, 6))
        n /= n.std() + 1e-6
        bg = (base + n * rng.uniform(15, 40)).astype(np.float32)
    return bg + rng.normal(0, rng.uniform(2, 14), (64, 64, 3)).astype(np.float32), int(kind)


def make_shape_parts(label: int, rng: np.random.Generator) -> tuple:
    """One image of class ``label`` and how it was made: (64 x 64 x 3 uint8 BGR image, the figure's
    coverage in [0, 1] (64 x 64 float32), its colour (BGR), the background kind (:data:`BACKGROUNDS`)).

    The random draws are those of :func:`make_shape`, in the same order: the same seed gives the
    same image (the shipped checkpoints were trained on them).
    """
    bg, kind = _background(rng)
    mean = bg.reshape(-1, 3).mean(0)
    for _ in range(50):
        fg = rng.uniform(0, 255, 3)
        if np.linalg.norm(fg - mean) > 110:
            break
    else:
        fg = 255.0 - mean
    a = _shape_mask(label, rng)
    img = bg * (1 - a[..., None]) + fg * a[..., None] + rng.normal(0, 3, (64, 64, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), a, fg, kind


def make_shape(label: int, rng: np.random.Generator) -> np.ndarray:
    """One 64 x 64 x 3 uint8 BGR image of class ``label``."""
    return make_shape_parts(label, rng)[0]


# ----------------------------------------------------------------------------- glyphs
_FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
          cv2.FONT_HERSHEY_SCRIPT_COMPLEX]


def make_glyph(label: int, rng: np.random.Generator) -> np.ndarray:
    """One 28 x 28 uint8 grayscale image of digit ``label`` (light digit on dark ground)."""
    S = 84
    canvas = np.zeros((S, S), np.uint8)
    font = int(rng.choice(_FONTS)) | (cv2.FONT_ITALIC if rng.random() < 0.25 else 0)
    text = str(label)
    thick = int(rng.integers(3, 9))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
    scale = rng.uniform(52, 66) / max(th, 1)
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    org = (int((S - tw) / 2), int((S + th) / 2))
    cv2.putText(canvas, text, org, font, scale, 255, thick, cv2.LINE_AA)
    ys, xs = np.nonzero(canvas)
    c = (xs.mean(), ys.mean()) if len(xs) else (S / 2, S / 2)
    ang = rng.uniform(-15, 15)
    M = cv2.getRotationMatrix2D(c, ang, rng.uniform(0.8, 1.1))
    sh = rng.uniform(-0.3, 0.3)
    M = np.vstack([M, [0, 0, 1]]) @ np.array([[1, sh, -sh * c[1]], [0, 1, 0], [0, 0, 1]])
    M[0, 2] += S / 2 - c[0] + rng.uniform(-6, 6)
    M[1, 2] += S / 2 - c[1] + rng.uniform(-6, 6)
    warped = cv2.warpAffine(canvas, M[:2], (S, S), flags=cv2.INTER_LINEAR)
    small = cv2.resize(warped, (28, 28), interpolation=cv2.INTER_AREA).astype(np.float32)
    fg, bgv = rng.uniform(170, 255), rng.uniform(0, 40)
    img = bgv + small / 255.0 * (fg - bgv) + rng.normal(0, rng.uniform(0, 18), small.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- training
DEMOS = {
    "shapes": dict(net=ShapesNet, make=make_shape, spec=SHAPES_SPEC, labels=SHAPES_LABELS,
                   title="Shapes (RGB 64x64, 10 classes)", arch="cnnvis_gui.models.demo_nets:ShapesNet",
                   n_train=10000, n_test=2000, epochs=4, lr=3e-3, batch=64),
    "glyphs": dict(net=GlyphsNet, make=make_glyph, spec=GLYPHS_SPEC, labels=GLYPHS_LABELS,
                   title="Glyphs (gray 28x28, digits 0-9)", arch="cnnvis_gui.models.demo_nets:GlyphsNet",
                   n_train=10000, n_test=2000, epochs=2, lr=3e-3, batch=64),
}


def iter_dataset(name: str, n: int, seed: int):
    """Yield ``(image, label)`` ``n`` times: the images :func:`make_dataset` returns, one at a time."""
    d = DEMOS[name]
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(d["labels"])
    rng.shuffle(labels)
    for k in labels:
        yield d["make"](int(k), rng), k


def make_dataset(name: str, n: int, seed: int):
    """``n`` images (uint8, as written to PNG) and labels, balanced over classes, seeded."""
    pairs = list(iter_dataset(name, n, seed))
    return [im for im, _ in pairs], np.array([k for _, k in pairs], dtype=np.int64)


def to_batch(spec: InputSpec, images) -> torch.Tensor:
    """Exactly the preprocessing the program applies to a frame (``InputSpec.to_array``)."""
    return torch.from_numpy(np.stack([spec.to_array(im) for im in images]))


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / max(1, len(x))


def train(name: str, epochs: int | None = None, quick: bool = False, out: Path | None = None,
          seed: int = 0, log=print) -> dict:
    """Generate data, train, evaluate, and write checkpoint + samples. Returns a result dict."""
    torch.set_num_threads(2)
    d = DEMOS[name]
    out = Path(out) if out is not None else Path(__file__).resolve().parents[2] / "assets"
    n_train, n_test = (256, 200) if quick else (d["n_train"], d["n_test"])
    epochs = epochs if epochs is not None else (1 if quick else d["epochs"])
    lines = []

    def say(msg):
        lines.append(msg)
        log(msg, flush=True) if log is print else log(msg)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tr_imgs, tr_y = make_dataset(name, n_train, seed=1000 + seed)
    te_imgs, te_y = make_dataset(name, n_test, seed=2000 + seed)
    x, y = to_batch(d["spec"], tr_imgs), torch.from_numpy(tr_y).long()
    xt, yt = to_batch(d["spec"], te_imgs), torch.from_numpy(te_y).long()
    t_data = time.perf_counter() - t0
    say(f"[{name}] generated {n_train} training + {n_test} held-out images in {t_data:.1f}s")

    model = d["net"]()
    opt = torch.optim.AdamW(model.parameters(), lr=d["lr"], weight_decay=1e-4)
    steps = epochs * math.ceil(n_train / d["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=d["lr"], total_steps=steps, pct_start=0.2)
    lossf = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    t1, c1 = time.perf_counter(), time.process_time()
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n_train, generator=g)
        tot, nb = 0.0, 0
        for i in range(0, n_train, d["batch"]):
            idx = perm[i:i + d["batch"]]
            xb = x[idx]
            if name == "shapes":   # cheap augmentation: random horizontal flip keeps every class
                flip = torch.rand(len(idx), generator=g) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            loss = lossf(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
            nb += 1
        acc = evaluate(model, xt, yt)
        say(f"[{name}] epoch {ep + 1}/{epochs}: train loss {tot / nb:.4f}, held-out accuracy {acc * 100:.2f}%, "
            f"{time.perf_counter() - t1:.0f}s")
    t_train = time.perf_counter() - t1
    cpu_train = time.process_time() - c1   # CPU seconds: wall time is inflated when the cores are shared
    acc = evaluate(model, xt, yt)
    model.eval()

    models_dir = out / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = models_dir / f"{name}.pth"
    meta = {"spec": d["spec"].to_dict(), "labels": list(d["labels"]), "name": d["title"],
            "arch": d["arch"], "arch_kwargs": {}}
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "cnnvis": meta}, ckpt_path)
    size = ckpt_path.stat().st_size

    samples = _write_samples(name, model, out / "samples" / name, seed=3000 + seed, tries=3 if quick else 50)
    total = time.perf_counter() - t0
    say(f"[{name}] held-out accuracy {acc * 100:.2f}% on {n_test} images; training {t_train:.0f}s wall "
        f"({cpu_train:.0f} CPU-s on {torch.get_num_threads()} threads), "
        f"total {total:.0f}s; checkpoint {ckpt_path.name} {size / 1024:.0f} KiB; {len(samples)} samples")
    result = dict(name=name, accuracy=acc, train_seconds=t_train, cpu_seconds=cpu_train, total_seconds=total, n_train=n_train,
                  n_test=n_test, epochs=epochs, checkpoint=ckpt_path, size=size, samples=samples, log=lines)
    _write_training_md(models_dir / "TRAINING.md", result, quick)
    return result


def _write_samples(name: str, model: nn.Module, folder: Path, seed: int, tries: int = 50) -> list:
    """One image per class, chosen so the model classifies the PNG as read back correctly."""
    d = DEMOS[name]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    rng = np.random.default_rng(seed)
    written = []
    for k, label in enumerate(d["labels"]):
        fallback = None
        for _ in range(tries):
            img = d["make"](k, rng)
            fallback = img if fallback is None else fallback
            path = folder / f"{k:02d}_{label}.png"
            cv2.imwrite(str(path), img)
            back = cv2.imread(str(path), cv2.IMREAD_COLOR)
            with torch.no_grad():
                probs = model(d["spec"].to_tensor(back)).softmax(1)[0]
            if int(probs.argmax()) == k and float(probs[k]) > 0.9:
                break
        else:
            cv2.imwrite(str(path), fallback)
        written.append(path)
    return written


def _write_training_md(path: Path, r: dict, quick: bool) -> None:
    name = r["name"]
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    body = "\n".join([
        begin,
        f"## {name}{' (quick run)' if quick else ''}",
        "",
        f"* held-out accuracy: **{r['accuracy'] * 100:.2f}%** on {r['n_test']} generated images "
        f"(training set: {r['n_train']} images, {r['epochs']} epochs, seed 0)",
        f"* training time: {r['train_seconds']:.0f} s wall, {r['cpu_seconds']:.0f} CPU-seconds (total with data "
        f"generation: {r['total_seconds']:.0f} s) on {torch.get_num_threads()} CPU threads, torch "
        f"{torch.__version__}, {platform.machine()}; wall time grows when other processes share the cores",
        f"* checkpoint: `models/{r['checkpoint'].name}`, {r['size'] / 1024:.0f} KiB",
        "",
        "```",
        *r["log"],
        "```",
        end,
    ])
    text = path.read_text() if path.exists() else (
        "# Demo model training log\n\nWritten by `python -m cnnvis_gui.models.train_demo all`.\n\n")
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pat.sub(lambda m: body, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + body + "\n"
    path.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cnnvis_gui.models.train_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("which", choices=["shapes", "glyphs", "all"])
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--quick", action="store_true", help="tiny dataset, 1 epoch (for tests)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the repository's assets/)")
    a = p.parse_args(argv)
    names = list(DEMOS) if a.which == "all" else [a.which]
    for n in names:
        train(n, epochs=a.epochs, quick=a.quick, out=a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
