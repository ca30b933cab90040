"""The scan's loop as a user of a big folder depends on it: decoding stays a bounded number of
batches ahead (memory), no decode thread outlives a scan, a cancel that comes with the last batch
keeps the finished atlas, and the time spent waiting for images adds up over the whole scan
(``bench_atlas.py`` reports it).  Found by mutation testing (``tools/mutation.sh atlas/scan.py``).
"""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import cnnvis_gui.atlas.sweep as scan_mod
from cnnvis_gui.atlas import TopKScan

from .helpers import TINY_SPEC, make_images, run_scan, tiny_model


@pytest.fixture
def submitted(monkeypatch):
    """Every batch handed to the decode pool, as (start, stop), in submission order."""
    seen = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, *args, **kw):
            seen.append(args)
            return super().submit(fn, *args, **kw)
    monkeypatch.setattr(scan_mod, "ThreadPoolExecutor", Recording)
    return seen


def test_decoding_stays_workers_plus_one_batches_ahead(tmp_path, submitted):
    make_images(tmp_path / "im", n=22, bad=False)
    s = TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=2, batch_size=4, workers=2,
                 use_cache=False)
    it = s.run()
    first = next(it)
    assert first.done == 4
    assert submitted == [(0, 4), (4, 8), (8, 12)]             # 2 workers + 1: memory bounded by 3 batches
    second = next(it)
    assert second.done == 8 and submitted[3:] == [(12, 16)]   # one more for each batch done
    for _ in it:
        pass
    assert submitted == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 22)]   # each once, none empty
    assert s.result is not None and len(s.result.paths) == 22


def _slow_scan(folder, workers: int, seconds: float) -> TopKScan:
    """A scan (batches of 4, no cache) whose every batch takes ``seconds`` longer to decode."""
    s = TopKScan(tiny_model(), TINY_SPEC, folder, ["features.4"], k=2, batch_size=4, workers=workers,
                 use_cache=False)
    real = s._decode

    def slow(start, stop):
        time.sleep(seconds)
        return real(start, stop)
    s._decode = slow
    return s


def test_no_decode_thread_outlives_a_cancelled_scan(tmp_path):
    make_images(tmp_path / "im", n=24, bad=False)
    it = _slow_scan(tmp_path / "im", workers=2, seconds=0.2).run()
    next(it)                                  # two workers are now decoding the next batches
    it.close()                                # leaving the loop: the scan stops
    left = [t.name for t in threading.enumerate() if t.name.startswith("atlas-decode")]
    assert left == []


def test_a_cancel_that_comes_with_the_last_batch_keeps_the_finished_atlas(tmp_path):
    make_images(tmp_path / "im", n=8, bad=False)

    def scan():
        return TopKScan(tiny_model(), TINY_SPEC, tmp_path / "im", ["features.4"], k=2, batch_size=4,
                        cache_dir=tmp_path / "c")
    s = scan()
    for p in s.run():
        if p.done == p.total:
            s.cancel()
    assert s.result is not None and len(s.result.paths) == 8 and not s.result.from_cache
    again = scan().cached()
    assert again is not None and again.from_cache                 # stored as finished, not as a partial state
    assert not (s.cache_path / "partial.npz").exists()


def test_the_time_spent_waiting_for_images_adds_up_over_the_scan(tmp_path):
    make_images(tmp_path / "im", n=16, bad=False)
    s = _slow_scan(tmp_path / "im", workers=1, seconds=0.1)
    t0 = time.perf_counter()
    run_scan(s)
    elapsed = time.perf_counter() - t0
    # one worker decodes the 4 batches one after another (>= 0.4 s); the loop either waits for
    # them or runs the model, so together they cover nearly all of the scan, not its last batch
    assert elapsed >= 0.4
    assert s.wait_s + s.forward_s >= 0.3, (s.wait_s, s.forward_s, elapsed)
    assert s.wait_s <= elapsed and s.forward_s <= elapsed
