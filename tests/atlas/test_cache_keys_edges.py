"""The atlas cache's keys and readers at their edges (found by a mutation run of ``atlas/cache.py``):
weights after a module's extra state, what a key looks like, the way out a full disk names, and
the size bound a caller gives the JSON reader."""
from __future__ import annotations

import torch
from torch import nn

from cnnvis_gui.atlas import cache


class Noted(nn.Module):
    """A layer that keeps a note (an extra state that is no tensor)."""

    def __init__(self):
        super().__init__()
        self.note = {"steps": 1}

    def get_extra_state(self):
        return self.note

    def set_extra_state(self, state):
        self.note = state


class NoteThenWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = Noted()
        self.conv = nn.Conv2d(3, 2, 1)


def test_weights_after_a_layer_s_extra_state_are_in_the_key():
    """A fine-tuned checkpoint whose only change comes after such a layer must not hit the old atlas."""
    torch.manual_seed(0)
    a = NoteThenWeights()
    assert list(a.state_dict())[0] == "first._extra_state"
    b = NoteThenWeights()
    b.load_state_dict(a.state_dict())
    assert cache.weights_hash(a) == cache.weights_hash(b)
    with torch.no_grad():
        b.conv.weight[0, 0, 0, 0] += 1
    assert cache.weights_hash(a) != cache.weights_hash(b)


def test_a_key_is_24_lower_case_hex_digits_and_nothing_else():
    key = cache.digest({"layer": "features.3"})
    assert cache.is_digest(key)
    for other in (key.upper(), key[:-1], key + "0", " " + key, key.replace(key[0], "g"), None, 12, b"0" * 24):
        assert not cache.is_digest(other), other


def test_a_full_cache_names_the_folder_it_was_given(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "env"))
    hint = cache.cache_hint(tmp_path / "given")
    assert hint.startswith(f"the atlas cache is kept in '{tmp_path / 'given'}': free some space there")
    assert cache.cache_hint().startswith(f"the atlas cache is kept in '{tmp_path / 'env'}'")


def test_the_json_reader_keeps_to_the_size_it_is_given(tmp_path):
    path = tmp_path / "meta.json"
    path.write_text('{"images": ["a.png", "b.png"]}')
    size = path.stat().st_size
    assert cache.read_json(path, limit=size) == {"images": ["a.png", "b.png"]}
    assert cache.read_json(path, limit=size - 1) is None           # too big for the caller: no cache


class Double(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w = nn.Parameter(torch.full((4,), value, dtype=torch.float64))


def test_double_precision_weights_are_keyed_by_their_own_bytes():
    """Two float64 checkpoints that differ below float32's precision are two models, two atlases."""
    a, b = Double(1.0), Double(1.0 + 1e-12)
    assert torch.equal(a.w.float(), b.w.float())
    assert cache.weights_hash(a) != cache.weights_hash(b)


class Float8(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.register_buffer("scale", torch.full((2,), value).to(torch.float8_e4m3fn))


def test_weights_numpy_cannot_hold_are_keyed_too():
    """float8 has no numpy dtype: its values are hashed as floats, not refused."""
    assert cache.weights_hash(Float8(1.0)) == cache.weights_hash(Float8(1.0))
    assert cache.weights_hash(Float8(1.0)) != cache.weights_hash(Float8(2.0))


def test_a_cached_npz_is_read_up_to_exactly_its_bound_and_never_unpickled(tmp_path):
    import numpy as np
    from cnnvis_gui.core.bounds import npz_declared_bytes
    path = tmp_path / "result.npz"
    np.savez(path, act=np.zeros((4, 8), np.float32))
    size = npz_declared_bytes(path)
    assert size == 4 * 8 * 4
    assert cache.load_npz(path, limit=size)["act"].shape == (4, 8)
    assert cache.load_npz(path, limit=size - 1) is None
    np.savez(tmp_path / "odd.npz", act=np.array([{"a": 1}], dtype=object))   # a pickled object: no cache
    assert cache.load_npz(tmp_path / "odd.npz") is None


def test_a_user_module_s_class_whose_file_is_gone_is_keyed_by_its_module(monkeypatch):
    """A model loaded from net.py whose file was deleted since: its module name without the random
    suffix names it, not the word 'file' every such class would share."""
    import sys
    import types
    mod = types.ModuleType("_cnnvis_user_net_0123abcd")
    mod.__file__ = "/nonexistent/net.py"
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    cls = type("GoneNet", (nn.Module,), {"__module__": mod.__name__})
    assert cache.class_key(cls) == "_cnnvis_user_net.GoneNet"
