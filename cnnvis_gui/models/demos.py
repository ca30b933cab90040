"""The shipped demo models: ``demo("shapes")`` / ``demo("glyphs")`` and their sample images."""
from __future__ import annotations

from pathlib import Path

from .errors import ModelLoadError
from .loader import LoadedModel, load

__all__ = ["DEMO_NAMES", "assets_dir", "demo", "demo_checkpoint", "demo_samples", "demo_name_of"]

DEMO_NAMES = ("shapes", "glyphs")


def assets_dir() -> Path:
    """The repository's ``assets/`` folder (demo checkpoints, sample images)."""
    return Path(__file__).resolve().parents[2] / "assets"


def _check(name: str) -> str:
    if name not in DEMO_NAMES:
        raise ModelLoadError(f"unknown demo model {name!r}; choose one of {', '.join(DEMO_NAMES)}.")
    return name


def demo_checkpoint(name: str) -> Path:
    """Path of the shipped checkpoint ``assets/models/<name>.pth``."""
    return assets_dir() / "models" / f"{_check(name)}.pth"


def demo(name: str = "shapes", device="cpu") -> LoadedModel:
    """Load a shipped demo model (architecture, spec and labels come from its checkpoint)."""
    path = demo_checkpoint(name)
    if not path.is_file():
        raise ModelLoadError(f"the demo checkpoint {path} is missing; recreate it with "
                             f"python -m cnnvis_gui.models.train_demo {name}")
    return load(path, device=device)


def demo_samples(name: str) -> list:
    """Sample images shipped for a demo model, ``assets/samples/<name>/NN_label.png``, sorted."""
    return sorted((assets_dir() / "samples" / _check(name)).glob("*.png"))


def demo_name_of(loaded) -> str | None:
    """Which shipped demo a ``LoadedModel`` is (its weights are the demo's checkpoint file), or None."""
    first = str(getattr(loaded, "source", "") or "").split(" + ", 1)[0]
    if not first:
        return None
    for name in DEMO_NAMES:
        try:
            if Path(first).resolve() == demo_checkpoint(name).resolve():
                return name
        except OSError:
            continue
    return None
