"""``cnnvis export``'s saliency display options on the real network: the PNG follows --sign / --clip /
--percentile (default: signed, clipped at the 98th percentile), the .npz stays raw."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cnnvis_gui import cli
from cnnvis_gui.core import saliency_to_image
from tests import realnet as rn

BASE = ["export", "--model", rn.ARCH, "--pretrained", rn.PRETRAINED, "--device", "cpu", "--layer", "classifier.1",
        "--units", "285", "--method", "guided", "--quiet"]


def _png(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_export_pngs_follow_the_display_options_and_the_npz_stays_raw(realnet_env, tmp_path):
    photo = realnet_env.photo_paths["chelsea"]
    out = tmp_path / "default"
    assert cli.main([*BASE, "--input", str(photo), "--raw", "--out", str(out)]) == cli.EXIT_OK
    (d,) = out.iterdir()
    raw = np.load(d / "raw.npz")["saliency_guided"][0]
    assert np.abs(raw).max() > 10 * np.percentile(np.abs(raw), 98)           # raw values, not a picture
    png = _png(d / "classifier.1_u0285_guided.png")
    np.testing.assert_array_equal(png, saliency_to_image(raw))                 # the robust default
    assert not np.array_equal(png, saliency_to_image(raw, clip="max"))
    o = tmp_path / "chosen"
    extra = ["--filter", "gray", "--sign", "positive", "--clip", "mass", "--percentile", "99.5"]
    assert cli.main([*BASE, "--input", str(photo), "--out", str(o), *extra]) == cli.EXIT_OK
    (d2,) = o.iterdir()
    got = _png(d2 / "classifier.1_u0285_guided.png")
    np.testing.assert_array_equal(got, saliency_to_image(raw, "gray", sign="positive", clip="mass", percentile=99.5))


@pytest.mark.parametrize("args,msg", [
    (["--percentile", "0"], "argument --percentile: must be a number in (0, 100], got '0'"),
    (["--percentile", "abc"], "argument --percentile: must be a number in (0, 100], got 'abc'"),
    (["--sign", "both"], "argument --sign: invalid choice: 'both'"),
    (["--clip", "std"], "argument --clip: invalid choice: 'std'"),
])
def test_bad_display_options_exit_2_with_one_line(args, msg, capsys, tmp_path):
    code = cli.main(["export", "--model", "shapes", "--input", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("cnnvis: error: " + msg) and err.count("\n") == 1
