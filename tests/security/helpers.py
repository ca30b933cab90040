"""Crafted checkpoints that ask to run code, and markers that prove whether it ran."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from cnnvis_gui.models import demo_checkpoint

EVIL_PY = '''
import pathlib
pathlib.Path({marker!r}).write_text("the top level of this file ran")
from cnnvis_gui.models.demo_nets import ShapesNet as Net
'''


def shapes_state_dict() -> dict:
    return torch.load(demo_checkpoint("shapes"), weights_only=True)["state_dict"]


def touch_meta(marker: Path, callable_: str = "os:system") -> dict:
    """Metadata naming a standard-library callable that would create ``marker``."""
    kw = {"os:system": "command", "subprocess:getoutput": "cmd"}[callable_]
    return {"arch": callable_, "arch_kwargs": {kw: f"touch '{marker}'"}}


def pth_with_meta(path: Path, meta: dict) -> Path:
    torch.save({"state_dict": shapes_state_dict(), "cnnvis": meta}, path)
    return path


def safetensors_with_meta(path: Path, meta: dict) -> Path:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in shapes_state_dict().items()}, str(path),
              metadata={"cnnvis": json.dumps(meta)})
    return path


def plain_with_sidecar(path: Path, meta: dict, wrap: bool = False) -> Path:
    torch.save(shapes_state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"cnnvis": meta} if wrap else meta))
    return path


def py_beside(folder: Path, marker: Path, name: str = "evil.py") -> Path:
    """A ``.py`` architecture whose top level writes ``marker``; returns the checkpoint naming it."""
    (folder / name).write_text(EVIL_PY.format(marker=str(marker)))
    spec = torch.load(demo_checkpoint("shapes"), weights_only=True)["cnnvis"]["spec"]
    return pth_with_meta(folder / "with_py.pth", {"arch": f"{name}:Net", "spec": spec})
