"""Seed torch's hub cache and the huggingface cache the way a finished download leaves them.

No network: every file is a random-init state dict saved under the real name the library
looks for, so a test that loads it proves the lookup, the safe read and the metadata -- and a
test that finds nothing proves the offline failure.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

TV_ARCH = "torchvision:resnet18"
TV_FILE = "resnet18-f37072fd.pth"          # ResNet18_Weights.IMAGENET1K_V1.url's file name
TIMM_ARCH = "timm:resnet18"
TIMM_REPO = "timm/resnet18.a1_in1k"        # timm's default resnet18 weights on the hub


def use_caches(monkeypatch, root: Path) -> tuple:
    """Point TORCH_HOME / HF_HOME at ``root`` and forbid the network -> (torch home, hf home)."""
    th, hf = root / "torch", root / "hf"
    monkeypatch.setenv("TORCH_HOME", str(th))
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("CNNVIS_OFFLINE", "1")
    return th, hf


_MADE: dict = {}


def seed_torchvision(torch_home: Path, name: str = "resnet18", file: str = TV_FILE, seed: int = 3) -> tuple:
    """Save a random-init ``name`` state dict at ``torch_home/hub/checkpoints/file`` -> (path, state dict).

    The bytes are made once per process and copied (a 45 MB torch.save per test is slow on a busy machine).
    """
    import torchvision.models as tvm
    if (name, seed) not in _MADE:
        torch.manual_seed(seed)
        sd = tvm.get_model(name, weights=None).state_dict()
        buf = io.BytesIO()
        torch.save(sd, buf)
        _MADE[name, seed] = (buf.getvalue(), sd)
    data, sd = _MADE[name, seed]
    path = Path(torch_home) / "hub" / "checkpoints" / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, sd


def seed_timm(hf_home: Path, name: str = "resnet18", repo: str = TIMM_REPO, seed: int = 4) -> tuple:
    """Lay out ``repo``'s model.safetensors in the huggingface cache (refs/main -> snapshot) -> (path, sd)."""
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    sd = timm.create_model(name, pretrained=False).state_dict()
    root = Path(hf_home) / "hub" / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text("5eed0000")
    snap = root / "snapshots" / "5eed0000"
    snap.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    return snap / "model.safetensors", sd
