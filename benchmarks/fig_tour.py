"""The getting-started tour's pictures (docs/sections/10-start.md), on the real MobileNetV2 and the cat photo.

Needs the real pretrained MobileNetV2 and scikit-image's photos, offline::

    eval "$(../shared/tools/realnet.sh /tmp/realnet)"      # TORCH_HOME, CNNVIS_OFFLINE=1, REAL_PHOTOS
    python benchmarks/fig_tour.py docs/images/tour

Writes, into the folder given:

- ``window_class.png``: ``cnnvis-gui --screenshot`` on the output, unit 285 (Egyptian cat), guided
  backprop beside Grad-CAM;
- ``window_unit.png``: the same on ``features.13``, unit 91 (it fires on the eyes);
- ``python.jpg``: what the README's Python example computes, run verbatim (the ``From Python`` block
  of docs/sections/00-top.md): the model input, the ``guided.png`` it writes, its Grad-CAM ``cam``
  over the input.

and prints, for each window picture, the command that took it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fig_saliency_display import panel  # noqa: E402  (same figure style)

MODEL = ["--model", "torchvision:mobilenet_v2", "--pretrained", "IMAGENET1K_V1"]
WINDOWS = {"window_class.png": ["--layer", "output", "--unit", "285", "--method", "guided", "--compare", "gradcam"],
           "window_unit.png": ["--layer", "features.13", "--unit", "91", "--method", "guided", "--compare", "gradcam"]}


def screenshot(out: Path, photo: Path, view: list[str]) -> None:
    cmd = [sys.executable, str(ROOT / "run_gui.py"), *MODEL, "--input", str(photo), *view, "--screenshot", str(out)]
    print("cnnvis-gui " + " ".join(cmd[2:]).replace(str(photo), "chelsea.png").replace(str(out), out.name))
    subprocess.run(cmd, check=True, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))


def readme_example() -> str:
    text = (ROOT / "docs" / "sections" / "00-top.md").read_text(encoding="utf-8")
    return re.search(r"^## From Python\n.*?^```python\n(.*?)^```", text, re.S | re.M).group(1)


def python_figure(out: Path, photo: Path) -> None:
    from cnnvis_gui.core import overlay
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(photo, Path(tmp) / "chelsea.png")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            ns: dict = {}
            exec(compile(readme_example(), "README.md (From Python)", "exec"), ns)
            guided = cv2.cvtColor(cv2.imread("guided.png"), cv2.COLOR_BGR2RGB)
        finally:
            os.chdir(cwd)
    lm, x, cam, cat = ns["lm"], ns["x"], ns["cam"], ns["cat"]
    rgb = lm.spec.to_image(x)
    cells = [panel(rgb, "x: the model input", f"{lm.labels[cat]}: class {cat}"),
             panel(guided, "guided.png", "frame.saliency(..., 'guided')"),
             panel(overlay(rgb, cam[0].numpy(), alpha=0.5), "cam over the input", "frame.grad_cam(...)")]
    sep = np.full((cells[0].shape[0], 6, 3), 255, np.uint8)
    fig = np.concatenate([cells[0], sep, cells[1], sep, cells[2]], axis=1)
    cv2.imwrite(str(out), cv2.cvtColor(fig, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f"wrote {out} ({fig.shape[1]}x{fig.shape[0]})")


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    photo = Path(os.environ.get("REAL_PHOTOS", "/tmp/realnet/photos")) / "chelsea.png"
    python_figure(out / "python.jpg", photo)
    for name, view in WINDOWS.items():
        screenshot(out / name, photo, view)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/images/tour")
