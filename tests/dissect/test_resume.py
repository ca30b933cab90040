"""Done when: a cancelled or killed run resumes -- the second run does only the work left, and
the result equals one uninterrupted run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cnnvis_gui.dissect import Dissection

from .helpers import SPEC, colour_net, make_concepts

ROOT = Path(__file__).resolve().parents[2]


def _counting(model):
    """Images through the model's forward, apart from the model map's one-image probe."""
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]) if a[0].shape[0] > 1 else None)
    return calls


def _dissection(folder, cache, model=None, **kw):
    return Dissection(model or colour_net(), SPEC, folder, ["pool", "relu"], quantile=0.1, batch_size=4,
                      cache_dir=cache, checkpoint_every=0.0, **kw)


def _finish(d):
    for _ in d.run():
        pass
    return d.result


def test_a_cancelled_run_resumes_in_each_pass(tmp_path):
    folder = make_concepts(tmp_path / "c", n=20, seed=4)
    reference = _finish(_dissection(folder, tmp_path / "ref"))
    for phase in ("activations", "tally"):
        cache = tmp_path / f"cache-{phase}"
        model = colour_net()
        calls = _counting(model)
        d = _dissection(folder, cache, model)
        for p in d.run():
            if p.phase == phase and p.done == 8:
                d.cancel()
        assert d.result is None
        assert sum(calls) == (8 if phase == "activations" else 20)      # the tally reads the stored maps
        model2 = colour_net()
        calls2 = _counting(model2)
        res = _finish(_dissection(folder, cache, model2))
        assert sum(calls2) == (12 if phase == "activations" else 0)     # only what was left
        assert [u.to_dict() for u in res.layer("pool").units] == [u.to_dict() for u in reference.layer("pool").units]
        assert [u.to_dict() for u in res.layer("relu").units] == [u.to_dict() for u in reference.layer("relu").units]
        assert not list(cache.rglob("store*.npy")) and not list(cache.rglob("tally-*.npz"))   # cleaned up
        again = _dissection(folder, cache).cached()
        assert again is not None and again.from_cache


KILLED = '''
import sys, time
sys.path.insert(0, {root!r})
from tests.dissect.helpers import SPEC, colour_net
from cnnvis_gui.dissect import Dissection

model = colour_net()
model.register_forward_pre_hook(lambda m, a: time.sleep(0.4))
d = Dissection(model, SPEC, {folder!r}, ["pool", "relu"], quantile=0.1, batch_size=4, cache_dir={cache!r},
               checkpoint_every=0.0)
for p in d.run():
    print(p.phase, p.done, flush=True)
'''


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    folder = make_concepts(tmp_path / "c", n=20, seed=6)
    cache = tmp_path / "cache"
    script = tmp_path / "run.py"
    script.write_text(KILLED.format(root=str(ROOT), folder=str(folder), cache=str(cache)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        for line in proc.stdout:
            if line.split() == ["activations", "12"]:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert list(cache.rglob("pass1.npz")) and list(cache.rglob("store*.npy"))
    model = colour_net()
    calls = _counting(model)
    res = _finish(_dissection(folder, cache, model))
    assert 0 < sum(calls) <= 8                       # at most the batches after the last checkpoint
    reference = _finish(_dissection(folder, tmp_path / "ref"))
    assert [u.to_dict() for u in res.layer("pool").units] == [u.to_dict() for u in reference.layer("pool").units]
