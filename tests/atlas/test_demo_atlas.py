"""The demo atlas: images from the demo's own generator, drawn once, scanned once, both cached."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui.atlas import demo as D
from cnnvis_gui.core import CnnvisError, model_map
from cnnvis_gui.models import demo, demo_checkpoint
from cnnvis_gui.models.train_demo import iter_dataset

pytestmark = pytest.mark.skipif(not demo_checkpoint("glyphs").is_file(), reason="demo checkpoints not built")
N = 60          # images: a few batches, fast


@pytest.fixture(scope="module")
def glyphs():
    return demo("glyphs")


def run(d):
    return [p for p in d.run()]


def test_first_run_draws_the_generator_images_and_scans_every_layer(glyphs, cache):
    d = D.DemoAtlas(glyphs.model, glyphs.spec, "glyphs", n=N, k=4, batch_size=16)
    steps = run(d)
    assert [p.phase for p in steps][:1] == ["drawing"] and steps[-1].phase == "scanning"
    assert steps[-1].done == steps[-1].total == N
    files = sorted(d.folder.glob("*.png"))
    assert len(files) == N and d.folder.parent == cache
    for f, (img, k) in zip(files, iter_dataset("glyphs", N, D.DEMO_SEED)):   # exactly the generator's images
        assert np.array_equal(cv2.imread(str(f), cv2.IMREAD_UNCHANGED), img)
        assert f.name.endswith(f"_{k}.png")
    assert list(d.result.layers) == list(model_map(glyphs.model, glyphs.spec).visualizable_names())

    # the hits are the true top-k of the images: an independent forward over all of them
    layer = "features.8"
    acts = {}
    h = dict(glyphs.model.named_modules())[layer].register_forward_hook(lambda m, a, o: acts.setdefault("a", o))
    try:
        x = torch.from_numpy(np.stack([glyphs.spec.to_array(cv2.imread(str(f), cv2.IMREAD_UNCHANGED))
                                       for f in files]))
        with torch.no_grad():
            glyphs.model(x)
    finally:
        h.remove()
    per_image = acts["a"].flatten(2).amax(2)           # images x units
    for unit in (0, 5):
        want = torch.sort(per_image[:, unit], descending=True, stable=True)
        hits = d.result.hits(layer, unit)
        assert [hh.image for hh in hits] == want.indices[:4].tolist()
        assert [hh.value for hh in hits] == pytest.approx(want.values[:4].tolist(), rel=1e-4, abs=1e-5)


def test_second_start_reuses_images_and_scan(glyphs, cache):
    first = D.DemoAtlas(glyphs.model, glyphs.spec, "glyphs", n=N, k=4, batch_size=16)
    run(first)
    stamps = {f: f.stat().st_mtime_ns for f in first.folder.iterdir()}
    again = D.DemoAtlas(glyphs.model, glyphs.spec, "glyphs", n=N, k=4, batch_size=16)
    steps = run(again)
    assert [p.phase for p in steps] == ["cached"]
    assert again.result.from_cache and again.result.key == first.result.key
    assert {f: f.stat().st_mtime_ns for f in again.folder.iterdir()} == stamps
    assert np.array_equal(again.result.layer("features.8").images, first.result.layer("features.8").images)


def test_cancel_while_drawing_leaves_no_folder(glyphs, cache):
    d = D.DemoAtlas(glyphs.model, glyphs.spec, "glyphs", n=N, k=4)
    for p in D.draw_demo_images("glyphs", d.folder, N, cancel=_set_after(1), every=10):
        pass
    assert not d.folder.exists() and list(cache.iterdir()) == []
    d.cancel()                                   # cancelled before it starts: nothing drawn, nothing scanned
    assert run(d) == [] and d.result is None and not d.folder.exists()


def test_cancel_while_scanning_gives_no_result(glyphs, cache):
    d = D.DemoAtlas(glyphs.model, glyphs.spec, "glyphs", n=N, k=4, batch_size=16)
    seen = []
    for p in d.run():
        seen.append(p)
        if p.phase == "scanning":
            d.cancel()
    assert seen[-1].phase == "scanning" and seen[-1].done < N and d.result is None


def _set_after(n):
    ev = threading.Event()

    class Count:
        i = 0

        def is_set(self):
            Count.i += 1
            if Count.i > n:
                ev.set()
            return ev.is_set()
    return Count()


def test_an_incomplete_folder_is_drawn_again(glyphs, cache):
    folder = D.demo_images_folder("glyphs", N)
    folder.mkdir(parents=True)
    (folder / "00000_0.png").write_bytes(b"torn")
    d = D.DemoAtlas(glyphs.model, glyphs.spec, "glyphs", n=N, k=4, batch_size=32)
    run(d)
    assert len(list(folder.glob("*.png"))) == N and d.result.skipped == []


def test_only_the_demo_generators(glyphs, cache):
    with pytest.raises(CnnvisError, match="shapes and glyphs"):
        run(D.DemoAtlas(glyphs.model, glyphs.spec, "mnist", n=N))


def test_which_demo_a_model_is(glyphs):
    from cnnvis_gui.models import load
    from cnnvis_gui.models.demos import demo_name_of
    assert demo_name_of(glyphs) == "glyphs" and demo_name_of(demo("shapes")) == "shapes"
    assert demo_name_of(load(arch="cnnvis_gui.models.demo_nets:GlyphsNet")) is None   # same class, not the demo
