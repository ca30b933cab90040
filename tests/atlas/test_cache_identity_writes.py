"""The atlas cache from the user's side: which model a cached atlas belongs to, and what a failed
write leaves behind.

- A fine-tuned checkpoint that changed only BatchNorm running statistics computes other
  activations, so it must get its own atlas, never the stale one of the model before.
- A write that fails half-way (the disk filled up while a scan checkpointed its progress) must
  leave the earlier file whole: the next scan resumes from it.
"""
from __future__ import annotations

import copy
import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnvis_gui.atlas import TopKScan, cache, load_scan
from cnnvis_gui.core import files

from .helpers import TINY_SPEC, make_images, run_scan


class BNNet(nn.Module):
    """conv -> BatchNorm -> ReLU twice, RGB 32 x 32 -> 4 classes."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def bn_net(seed=0):
    torch.manual_seed(seed)
    return BNNet().eval()


@pytest.fixture
def folder(tmp_path):
    make_images(tmp_path / "im", n=12, bad=False)
    return tmp_path / "im"


def scan(model, folder, cdir, **kw):
    kw.setdefault("k", 2)
    kw.setdefault("batch_size", 4)
    return TopKScan(model, TINY_SPEC, folder, ["features.6"], cache_dir=cdir, **kw)


def test_new_batchnorm_statistics_get_their_own_atlas(folder, tmp_path):
    before = bn_net()
    tuned = copy.deepcopy(before)
    with torch.no_grad():
        tuned.features[5].running_mean.add_(0.7)                # fine-tuned statistics, the same parameters
        tuned.features[5].running_var.mul_(3.0)
    assert all(torch.equal(p, q) for p, q in zip(before.parameters(), tuned.parameters()))
    cdir = tmp_path / "cache"
    first = run_scan(scan(before, folder, cdir))
    assert load_scan(before, TINY_SPEC, folder, ["features.6"], k=2, cache_dir=cdir).from_cache
    assert load_scan(tuned, TINY_SPEC, folder, ["features.6"], k=2, cache_dir=cdir) is None
    second = run_scan(scan(tuned, folder, cdir))
    assert not second.from_cache
    fresh = run_scan(scan(tuned, folder, None, use_cache=False))
    got, want, old = (r.layer("features.6").values for r in (second, fresh, first))
    assert np.array_equal(got, want) and not np.allclose(got, old)   # the tuned model's own top activations
    # a counter buffer only (num_batches_tracked) is a buffer too: another checkpoint, another key
    counted = copy.deepcopy(before)
    counted.features[1].num_batches_tracked += 1
    assert cache.weights_hash(counted) != cache.weights_hash(before)
    assert cache.weights_hash(copy.deepcopy(before)) == cache.weights_hash(before)


def _disk_full_after(monkeypatch, n_ok):
    """``os.fsync`` works ``n_ok`` times, then the disk is full."""
    calls = [0]
    real = os.fsync

    def fsync(fd):
        calls[0] += 1
        if calls[0] > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_a_checkpoint_that_fails_to_write_leaves_the_earlier_one_to_resume_from(folder, tmp_path, monkeypatch):
    cdir = tmp_path / "cache"
    s = scan(bn_net(), folder, cdir, checkpoint_every=0.0)         # a checkpoint after every batch
    partial = s.cache_path / "partial.npz"
    _disk_full_after(monkeypatch, 1)                                # the first checkpoint is written, then none
    with pytest.raises(cache.WriteError, match="no space left on the device") as e:   # the one writer's words
        for _ in s.run():
            pass
    assert "the atlas cache is kept in" in str(e.value) and "--no-cache" in str(e.value)
    before = partial.read_bytes()
    with np.load(partial) as z:
        assert int(z["next_index"]) == 4                            # the earlier checkpoint, whole
    assert [p.name for p in s.cache_path.iterdir()] == ["partial.npz"]      # no temporary file left behind
    monkeypatch.undo()                                              # space again: the scan goes on from image 4
    again = scan(bn_net(), folder, cdir, checkpoint_every=0.0)
    steps = [p.done for p in again.run()]
    assert steps[0] == 8 and before                                 # resumed, not started over
    fresh = run_scan(scan(bn_net(), folder, None, use_cache=False))
    assert np.array_equal(again.result.layer("features.6").values, fresh.layer("features.6").values)


def test_a_failed_write_keeps_the_file_it_would_have_replaced(tmp_path, monkeypatch):
    path = tmp_path / "meta.json"
    cache.atomic_write_json(path, {"finished": "yesterday"})
    old = path.read_bytes()
    _disk_full_after(monkeypatch, 0)
    with pytest.raises(cache.WriteError):
        cache.atomic_write_json(path, {"finished": "today", "pad": "x" * 100_000})
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["meta.json"]
    monkeypatch.undo()
    real_fdopen = os.fdopen

    class Torn:                               # the process is stopped half-way through writing the data
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(self.f, name)
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Torn(real_fdopen(fd, *a, **k)))
    with pytest.raises(KeyboardInterrupt):
        cache.atomic_save_npz(path, big=np.arange(10_000))
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["meta.json"]
    assert cache.read_json(path) == {"finished": "yesterday"}


def test_where_the_cache_lives(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "cnnvis-gui" / "atlas"
    monkeypatch.setenv(cache.ENV_VAR, "~/elsewhere")
    assert cache.cache_dir() == tmp_path / "home" / "elsewhere"                 # the variable, ~ expanded
    assert cache.cache_dir("~/given") == tmp_path / "home" / "given"            # an argument wins over both
    monkeypatch.setenv(cache.ENV_VAR, "")
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "cnnvis-gui" / "atlas"   # empty: not set


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_cached_files_get_the_users_usual_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        cache.atomic_write_bytes(tmp_path / "sub" / "a.bin", b"x")      # the folder is made too
        cache.atomic_save_npz(tmp_path / "b.npz", v=np.arange(3))
    finally:
        os.umask(old)
    for p in (tmp_path / "sub" / "a.bin", tmp_path / "b.npz"):
        assert (p.stat().st_mode & 0o777) == 0o666 & ~umask, (oct(p.stat().st_mode), oct(umask))
    assert cache.load_npz(tmp_path / "b.npz")["v"].tolist() == [0, 1, 2]
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"x"


def test_durable_writes_reach_the_disk_and_pictures_skip_it(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    cache.atomic_write_json(tmp_path / "meta.json", {"a": 1})
    assert len(synced) == 1
    cache.atomic_write_bytes(tmp_path / "x.png", b"png", durable=False)
    assert len(synced) == 1 and (tmp_path / "x.png").read_bytes() == b"png"


def test_a_damaged_or_missing_cache_file_is_no_cache(tmp_path):
    assert cache.load_npz(tmp_path / "missing.npz") is None and cache.read_json(tmp_path / "missing.json") is None
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "text.npz").write_text("not a zip")
    (tmp_path / "bad.json").write_text("{not json")
    assert cache.load_npz(tmp_path / "cut.npz") is None and cache.load_npz(tmp_path / "text.npz") is None
    assert cache.read_json(tmp_path / "bad.json") is None
    np.savez(tmp_path / "objects.npz", o=np.array([{"a": 1}], dtype=object))
    assert cache.load_npz(tmp_path / "objects.npz") is None                    # never unpickled
    cache.atomic_write_json(tmp_path / "ok.json", {"when": "now", "n": [1, 2]})
    assert cache.read_json(tmp_path / "ok.json") == {"when": "now", "n": [1, 2]}


def test_the_key_of_an_object_is_stable_and_versioned(monkeypatch):
    a = cache.digest({"b": 1, "a": [1, 2]})
    assert a == cache.digest({"a": [1, 2], "b": 1}) and len(a) == 24            # key order does not matter
    assert a != cache.digest({"b": 1, "a": [2, 1]})
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)
    assert cache.digest({"b": 1, "a": [1, 2]}) != a                           # a new version: every key changes


def test_a_key_is_the_same_in_every_release_and_takes_paths():
    """An atlas cached by an earlier release is found again: the key of the same inputs never moves
    (unless CACHE_VERSION does); a path in a key is its text."""
    assert cache.digest({"a": 1}) == "48ffc58d1dc75caa03b160bf"
    assert cache.digest({"p": Path("/x")}) == cache.digest({"p": "/x"}) == "fd5004d74f7676fe741e869e"


def test_meta_files_take_paths_and_numpy_numbers(tmp_path):
    cache.atomic_write_json(tmp_path / "meta.json", {"folder": Path("/data/im"), "n": np.int64(3)})
    assert cache.read_json(tmp_path / "meta.json") == {"folder": "/data/im", "n": "3"}


def test_the_umask_is_read_without_changing_it_also_without_proc(monkeypatch):
    import builtins
    old = os.umask(0o027)
    try:
        assert files._umask() == 0o027          # the one atomic writer's (core/files.py), which the cache uses
        real_open = builtins.open

        def no_proc(path, *a, **k):
            if str(path).startswith("/proc/"):
                raise OSError(errno.ENOENT, "no /proc here")
            return real_open(path, *a, **k)
        monkeypatch.setattr(builtins, "open", no_proc)
        assert files._umask() == 0o027                      # asked the system, and set it back
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


def test_what_names_a_model_class_in_its_key(tmp_path):
    """A class from a file: 'file.' + qualname + '@' + the hash of the file's bytes (the random module name
    a loaded .py gets is no part of it); an installed class: its module; a class without a source file
    (built at run time): its module and qualname, a user file's random suffix removed."""
    import hashlib
    import importlib.util
    import sys
    f = tmp_path / "net.py"
    f.write_text("import torch.nn as nn\nclass Net(nn.Module):\n    pass\n")
    spec = importlib.util.spec_from_file_location("_cnnvis_user_net_0123abcd", f)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
        digest = hashlib.blake2b(f.read_bytes(), digest_size=16).hexdigest()
        assert cache.class_key(mod.Net) == f"file.Net@{digest}"
    finally:
        del sys.modules[spec.name]
    here = hashlib.blake2b(Path(__file__).read_bytes(), digest_size=16).hexdigest()
    assert cache.class_key(BNNet) == f"{__name__}.BNNet@{here}"
    for module, want in (("_cnnvis_user_net_89abcdef", "_cnnvis_user_net.Built"), ("lab.models", "lab.models.Built"),
                         ("", ".Built")):
        built = type("Built", (nn.Module,), {"__module__": module})
        assert cache.class_key(built) == want, module


class Odd(nn.Module):
    """A bfloat16 weight, an empty buffer before a float weight, and an extra state that is no tensor."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
        self.register_buffer("empty", torch.zeros(0))
        self.b = nn.Parameter(torch.ones(2))
        self.note = {"steps": 1}

    def get_extra_state(self):
        return self.note

    def set_extra_state(self, state):
        self.note = state


def test_every_kind_of_state_is_in_the_key():
    base = cache.weights_hash(Odd())
    assert len(base) == 40 and base == cache.weights_hash(Odd())
    for change in (lambda m: m.a.data.add_(1), lambda m: m.b.data.add_(1),       # after the empty buffer too
                   lambda m: m.note.update(steps=2)):
        m = Odd()
        with torch.no_grad():
            change(m)
        assert cache.weights_hash(m) != base


def test_the_temporary_file_is_beside_the_target_and_hidden(tmp_path, monkeypatch):
    moved = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (moved.append((Path(src), Path(dst))), real(src, dst))[1])
    cache.atomic_write_bytes(tmp_path / "result.npz", b"x")
    (src, dst), = moved
    assert dst == tmp_path / "result.npz" and src.parent == tmp_path           # one file system: an atomic rename
    assert src.name.startswith(".result.npz.") and src.name.endswith(".tmp")   # hidden, and says what it was for
