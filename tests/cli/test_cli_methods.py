"""``cnnvis export`` with the attribution and CAM families: the saved arrays are the core's."""
from __future__ import annotations

import numpy as np
import pytest

from cnnvis_gui import cli
from cnnvis_gui.core import CAM_METHODS, SALIENCY_METHODS, cam, saliency
from cnnvis_gui.models import demo, demo_checkpoint, demo_samples
from cnnvis_gui.sources import load_image

needs_shapes = pytest.mark.skipif(not demo_checkpoint("shapes").is_file(),
                                  reason="the shapes demo checkpoint (assets/models/shapes.pth) is not built")


def test_every_core_method_is_exported_and_aliases_resolve():
    assert set(SALIENCY_METHODS) | set(CAM_METHODS) | {"guided-gradcam"} == set(cli.EXPORT_METHODS)
    assert cli.parse_methods(["IG,grad-cam++", "score-cam", "input_x_gradient", "attention_rollout,le-grad"]) == [
        "integrated-gradients", "gradcam++", "scorecam", "input-x-gradient", "rollout", "legrad"]
    assert cli.parse_methods(["all"]) == list(cli.EXPORT_METHODS)
    assert cli.parse_methods(["all,legrad"], expand_all=False) == ["legrad"]


@needs_shapes
def test_export_smoothgrad_integrated_gradients_and_cams_match_core(tmp_path, capsys):
    sample = demo_samples("shapes")[3]
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", "shapes", "--device", "cpu", "--input", str(sample), "--layer", "fc2",
                   "--units", "3", "--method", "integrated-gradients,guided,gradcam++,scorecam,eigencam",
                   "--smoothgrad", "3", "--noise", "0.1", "--steps", "6", "--seed", "5", "--raw", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    d = out / sample.stem
    names = {p.name for p in d.iterdir()}
    assert {f"fc2_u0003_{m}.png" for m in ("integrated-gradients", "guided", "gradcam++", "scorecam",
                                            "eigencam")} <= names
    raw = np.load(d / "raw.npz")
    lm = demo("shapes")
    x = lm.spec.to_tensor(load_image(sample))
    for m in ("integrated-gradients", "guided"):
        ref = saliency(lm.model, x, "fc2", 3, m, smoothgrad=3, noise=0.1, steps=6, seed=5)[0].numpy()
        got = raw["saliency_" + m.replace("-", "_")][0]
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    for m, key in (("gradcam++", "gradcampp"), ("scorecam", "scorecam"), ("eigencam", "eigencam")):
        ref = cam(lm.model, x, "fc2", 3, str(raw["cam_layer"]), method=m).numpy()
        np.testing.assert_allclose(raw[key][0], ref, atol=1e-5)


@pytest.mark.parametrize("argv,text", [
    (["--smoothgrad", "-2"], "--smoothgrad is the number of noisy copies"),
    (["--smoothgrad", "4", "--noise", "-1"], "--noise is the SmoothGrad noise level"),
    (["--steps", "0"], "--steps is the number of integrated-gradients points"),
    (["--method", "gradcam+++"], "unknown method 'gradcam+++'"),
])
@needs_shapes
def test_bad_method_options_exit_2(tmp_path, capsys, argv, text):
    rc = cli.main(["export", "--model", "shapes", "--device", "cpu", "--input", str(demo_samples("shapes")[0]),
                   "--layer", "fc2", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert rc == cli.EXIT_USAGE and err.startswith("cnnvis: error: ") and text in err, err
    assert "Traceback" not in err
