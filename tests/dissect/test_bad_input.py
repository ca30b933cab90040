"""Done when: bad input gets one clear line and nothing half-written -- missing masks, an id not in
labels.csv, masks that are not label maps (RGB, float), an empty concept folder, a layer with no
spatial map, crafted CSV files."""
import json

import cv2
import numpy as np
import pytest

from cnnvis_gui.cli import main

from .helpers import make_concepts

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(0)                 # the same weights in every process and every load
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))
'''


@pytest.fixture
def net(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    return ["--model", f"{tmp_path / 'net.py'}:Net", "--input-size", "32", "--device", "cpu", "--trust-code"]


def _fails(capsys, args, *words):
    """Exit code 2, one line on stderr with every word, no traceback."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cnnvis: error: "), err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


def _run(net, concepts, out, *extra):
    return ["dissect", *net, "--concepts", str(concepts), "--layer", "conv", "--json", str(out), "--no-cache", "-q",
            *extra]


def test_each_bad_concept_folder_is_one_line_and_writes_nothing(tmp_path, net, capsys):
    out = tmp_path / "out.json"
    out.write_text('{"earlier": "result"}')               # a result from before: untouched by a failing run
    good = make_concepts(tmp_path / "good", n=4)
    assert main(_run(net, good, tmp_path / "fine.json")) == 0

    # an image without its mask
    c = make_concepts(tmp_path / "nomask", n=4)
    (c / "masks" / "im002.png").unlink()
    _fails(capsys, _run(net, c, out), "has no mask", "images/im002.png", "masks/im002.png")

    # a concept id the labels file does not name
    c = make_concepts(tmp_path / "unknown", n=4)
    m = cv2.imread(str(c / "masks" / "im001.png"), cv2.IMREAD_UNCHANGED)
    m[0, 0] = 9
    cv2.imwrite(str(c / "masks" / "im001.png"), m)
    _fails(capsys, _run(net, c, out), "im001.png", "holds concept id 9", "does not name")

    # an RGB picture instead of a label map
    c = make_concepts(tmp_path / "rgb", n=4)
    cv2.imwrite(str(c / "masks" / "im003.png"), np.full((32, 32, 3), 2, np.uint8))
    _fails(capsys, _run(net, c, out), "im003.png", "3-channel (colour) image, not a label map")

    # floating-point masks
    c = make_concepts(tmp_path / "float", n=4)
    (c / "masks" / "im000.png").unlink()
    cv2.imwrite(str(c / "masks" / "im000.tif"), np.full((32, 32), 1.0, np.float32))
    _fails(capsys, _run(net, c, out), "im000.tif", "floating-point values, not a label map")

    # an empty folder, and one with labels but no images
    (tmp_path / "empty").mkdir()
    _fails(capsys, _run(net, tmp_path / "empty", out), "is an empty folder")
    c = tmp_path / "noimages"
    (c / "images").mkdir(parents=True)
    (c / "labels.csv").write_text("1,red\n")
    _fails(capsys, _run(net, c, out), "has no images")
    _fails(capsys, _run(net, tmp_path / "missing", out), "is not a folder")
    assert json.loads(out.read_text()) == {"earlier": "result"}


def test_a_layer_without_a_spatial_map_is_refused_before_any_work(tmp_path, net, capsys):
    c = make_concepts(tmp_path / "c", n=2)
    args = _run(net, c, tmp_path / "o.json")
    args[args.index("conv")] = "fc"
    _fails(capsys, args, "layer 'fc'", "has no spatial map", "cnnvis info")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("labels, words", [
    ("id,name\n1,red\n1,blue\n", ("listed twice",)),
    ("id,name\n99999999,huge\n", ("is not a concept id",)),
    ("id,name\n0,none\n", ("outside 1..65535",)),
    ("id,name\n-3,neg\n", ("is not a concept id",)),
    ("name,colour\nred,1\n", ("has no 'id' and 'name' columns",)),
    ("id,name\n1\n", ("expected id,name[,category]",)),
    ("id,name\n1,\"" + "x" * 200_000 + "\"\n", ("not a readable CSV file",)),
    (b"id,name\n1,r\xe9d\n", ("not UTF-8 text",)),
    ("", ("is empty",)),
])
def test_crafted_labels_files_are_one_line(tmp_path, net, capsys, labels, words):
    c = make_concepts(tmp_path / "c", n=2)
    if isinstance(labels, bytes):
        (c / "labels.csv").write_bytes(labels)
    else:
        (c / "labels.csv").write_text(labels)
    _fails(capsys, _run(net, c, tmp_path / "o.json"), "labels", *words)
    assert not (tmp_path / "o.json").exists()


def test_names_from_a_file_reach_the_terminal_escaped(tmp_path, net, capsys):
    c = make_concepts(tmp_path / "c", n=6)
    (c / "labels.csv").write_text('id,name\n1,"\x1b[2K\x1b[1Aall clear"\n2,g\n3,b\n4,y\n5,s\n6,d\n')
    assert main(["dissect", *net, "--concepts", str(c), "--layer", "conv", "--json", str(tmp_path / "o.json"),
                 "--no-cache", "--quantile", "0.2"]) in (0, 1)
    out = capsys.readouterr().out
    assert "\x1b" not in out
    names = [x["name"] for x in json.loads((tmp_path / "o.json").read_text())["concepts"]]
    assert names[0] == "\\x1b[2K\\x1b[1Aall clear"


@pytest.mark.parametrize("row, words", [
    ("../../outside.png,train,32,32,32,32,m.png", ("not a path inside the concept folder",)),
    ("/etc/passwd,train,32,32,32,32,m.png", ("not a path inside the concept folder",)),
    ("a.png,train,32,32,32,32,../m.png", ("not a path inside the concept folder",)),
    ("a.png,train,32,32,x,32,m.png", ("sh/sw", "are not whole numbers")),
    ("a.png,train,32,32,99999999,32,m.png", ("mask size", "outside")),
    ("a.png,train,32,32,32,32,77", ("image label 77", "not in label.csv")),
    ("a.png,train,32,32,32,32,nothere.png", ("missing",)),
])
def test_crafted_broden_index_rows_are_one_line(tmp_path, net, capsys, row, words):
    b = tmp_path / "broden"
    (b / "images").mkdir(parents=True)
    cv2.imwrite(str(b / "images" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(b / "images" / "m.png"), np.zeros((32, 32, 3), np.uint8))
    (b / "index.csv").write_text("image,split,ih,iw,sh,sw,color\n" + row + "\n")
    (b / "label.csv").write_text("number,name,category,frequency,coverage,syns\n1,red,color(1),1,1.0,\n")
    _fails(capsys, _run(net, b, tmp_path / "o.json"), *words)
    assert not (tmp_path / "o.json").exists()


def test_a_broden_mask_that_is_not_r_plus_256g_is_refused(tmp_path, net, capsys):
    b = tmp_path / "broden"
    (b / "images").mkdir(parents=True)
    cv2.imwrite(str(b / "images" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(b / "images" / "m.tif"), np.zeros((32, 32), np.float32))
    (b / "index.csv").write_text("image,split,ih,iw,sh,sw,color\na.png,train,32,32,32,32,m.tif\n")
    (b / "label.csv").write_text("number,name,category,frequency,coverage,syns\n1,red,color(1),1,1.0,\n")
    _fails(capsys, _run(net, b, tmp_path / "o.json"), "m.tif", "floating-point", "R + 256 * G")


def test_crafted_parts_are_refused_and_never_name_a_cache_path(tmp_path, net, capsys):
    c = make_concepts(tmp_path / "c", n=4)
    parts = [tmp_path / f"p{i}" for i in range(2)]
    for i, p in enumerate(parts):
        assert main(["dissect", *net, "--concepts", str(c), "--layer", "conv", "--shard", f"{i}/2", "--batch-size",
                     "2", "--cache-dir", str(tmp_path / "cache"), "-q", "--out", str(p)]) == 0
    meta = json.loads((parts[1] / "dissect-part.json").read_text())
    meta["whole"]["weights"] = "../../../victim"
    (parts[1] / "dissect-part.json").write_text(json.dumps(meta))
    _fails(capsys, ["dissect", "merge", *map(str, parts), "--json", str(tmp_path / "o.json")], "cannot merge",
           "different dissection")
    meta["whole"] = dict(json.loads((parts[0] / "dissect-part.json").read_text())["whole"], weights="0" * 40)
    for p in parts:
        m = json.loads((p / "dissect-part.json").read_text())
        m["whole"] = meta["whole"]
        (p / "dissect-part.json").write_text(json.dumps(m))
    _fails(capsys, ["dissect", "merge", *map(str, parts), "--json", str(tmp_path / "o.json")],
           "does not match its fields")
    assert not (tmp_path / "o.json").exists() and not list(tmp_path.glob("victim*"))


@pytest.mark.parametrize("field, value, words", [
    ("count", 10 ** 12, ("'count' (shards) is 1,000,000,000,000, outside 1..65,536",)),
    ("count", "2", ("'count' (shards) must be a whole number",)),
    ("index", 7, ("'index' is 7, outside 0..1",)),
    ("images", 10 ** 15, ("'images'", "outside")),
    ("range", [0, 10 ** 9], ("range stop", "outside")),
    ("grids", {"conv": [10 ** 12, 32, 32]}, ("layer 'conv': its units", "outside 1..1,048,576")),
    ("grids", {"conv": [4, 10 ** 9, 32]}, ("its map side", "outside")),
    ("layers", ["conv"] * 3, ("not a list of distinct layer names",)),
    ("stage", "x" * 10_000, ("unknown stage",)),
])
def test_a_part_that_claims_huge_counts_is_one_line_before_anything_is_sized(tmp_path, net, capsys, field, value,
                                                                             words):
    c = make_concepts(tmp_path / "c", n=4)
    parts = [tmp_path / f"p{i}" for i in range(2)]
    for i, p in enumerate(parts):
        assert main(["dissect", *net, "--concepts", str(c), "--layer", "conv", "--shard", f"{i}/2", "--batch-size",
                     "2", "--cache-dir", str(tmp_path / "cache"), "-q", "--out", str(p)]) == 0
    meta = json.loads((parts[1] / "dissect-part.json").read_text())
    meta[field] = value
    (parts[1] / "dissect-part.json").write_text(json.dumps(meta))
    line = _fails(capsys, ["dissect", "merge", *map(str, parts), "--json", str(tmp_path / "o.json")],
                  str(parts[1]), "damaged or incomplete part", *words)
    assert len(line) < 400
    assert not (tmp_path / "o.json").exists() and not (tmp_path / "o.thresholds.json").exists()


def test_a_part_listing_more_skipped_images_than_its_slice_is_refused(tmp_path, net, capsys):
    c = make_concepts(tmp_path / "c", n=4)
    parts = [tmp_path / f"p{i}" for i in range(2)]
    for i, p in enumerate(parts):
        assert main(["dissect", *net, "--concepts", str(c), "--layer", "conv", "--shard", f"{i}/2", "--batch-size",
                     "2", "--cache-dir", str(tmp_path / "cache"), "-q", "--out", str(p)]) == 0
    z = dict(np.load(parts[0] / "dissect-part.npz"))
    z["skipped_paths"] = np.array(["x.png"] * 5)
    z["skipped_reasons"] = np.array(["bad"] * 5)
    np.savez(parts[0] / "dissect-part.npz", **z)
    _fails(capsys, ["dissect", "merge", *map(str, parts), "--json", str(tmp_path / "o.json")],
           str(parts[0]), "5 skipped images for a slice of 2")
    assert not (tmp_path / "o.json").exists()


def test_a_bad_mask_found_mid_run_is_one_line_leaves_no_result_and_the_fixed_set_runs(tmp_path, net, capsys):
    c = make_concepts(tmp_path / "c", n=12)
    cache = tmp_path / "cache"
    good = cv2.imread(str(c / "masks" / "im009.png"), cv2.IMREAD_UNCHANGED)
    bad = good.copy()
    bad[3, 3] = 200
    cv2.imwrite(str(c / "masks" / "im009.png"), bad)
    out = tmp_path / "o.json"
    args = ["dissect", *net, "--concepts", str(c), "--layer", "conv", "--json", str(out), "--batch-size", "2",
            "--cache-dir", str(cache), "-q"]
    _fails(capsys, args, "im009.png", "holds concept id 200", "does not name")
    assert not out.exists() and not list(cache.rglob("result.json"))
    cv2.imwrite(str(c / "masks" / "im009.png"), good)          # fixed: the run goes through
    assert main(args) == 0
    assert json.loads(out.read_text())["images"] == 12


def _broden(root, masks: dict):
    """A one-image Broden folder whose masks are ``{category: array}`` written as PNGs."""
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    for cat, m in masks.items():
        cv2.imwrite(str(root / "images" / f"a_{cat}.png"), m)
    cats = list(masks)
    (root / "index.csv").write_text("image,split,ih,iw,sh,sw," + ",".join(cats) + "\n"
                                    + "a.png,train,32,32,32,32," + ",".join(f"a_{c}.png" for c in cats) + "\n")
    (root / "label.csv").write_text("number,name,category,frequency,coverage,syns\n1,red,color(1),1,1.0,\n"
                                    "2,disk,object(1),1,1.0,\n")
    return root


def test_a_broden_mask_with_a_label_not_in_label_csv_is_one_line(tmp_path, net, capsys):
    m = np.zeros((32, 32, 3), np.uint8)
    m[:4, :4, 2], m[:4, :4, 1] = 7, 1                               # R + 256 G = 263
    b = _broden(tmp_path / "broden", {"color": m})
    _fails(capsys, _run(net, b, tmp_path / "o.json"), "a_color.png", "holds concept id 263", "does not name")
    assert not (tmp_path / "o.json").exists()


def test_an_images_broden_masks_of_different_sizes_are_one_line(tmp_path, net, capsys):
    b = _broden(tmp_path / "broden", {"color": np.zeros((32, 32, 3), np.uint8),
                                      "object": np.zeros((16, 16, 3), np.uint8)})
    _fails(capsys, _run(net, b, tmp_path / "o.json"), "a_object.png", "16x16")
    assert not (tmp_path / "o.json").exists()
