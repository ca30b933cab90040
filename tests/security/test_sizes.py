"""Memory from small inputs (issue 24): every size read from a file or an argument is bounded before anything is
allocated for it.  Where "before" matters, the allocation that would follow is replaced by a trap that fails the
test when it is reached."""
from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from cnnvis_gui import sources
from cnnvis_gui.cli import main
from cnnvis_gui.core import CnnvisError, InputSpec
from cnnvis_gui.models import ModelLoadError, load, load_labels

from .helpers import shapes_state_dict


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def lying_png(width: int, height: int, rows: int = 8) -> bytes:
    """A valid, small PNG (gray, 8-bit) whose header declares ``width`` x ``height`` pixels."""
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    data = b"".join(z.compress(row) for _ in range(rows)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_png_declaring_32000_squared_is_refused_before_decoding(tmp_path, monkeypatch, capsys):
    p = tmp_path / "big.png"
    p.write_bytes(lying_png(32000, 32000, rows=64))
    assert p.stat().st_size < 1 << 20
    monkeypatch.setattr(sources.base.cv2, "imdecode", lambda *a: pytest.fail("the decoder ran"))
    with pytest.raises(sources.SourceError, match=r"declares 32000x32000 pixels \(1,024 megapixels\)"):
        sources.load_image(p)
    assert main(["export", "--input", str(p), "--layer", "features.0", "--out", str(tmp_path / "o")]) == 2
    assert "declares 32000x32000 pixels" in _one_line(capsys.readouterr().err)


def lying_video(path, side: int):
    """A real 3-frame MJPG .avi whose AVI headers and JPEG frames declare side x side frames."""
    from tests.sources.fakes import write_video
    data = bytearray(write_video(path, n=3, size=(64, 48)).read_bytes())
    i = data.find(b"\xff\xc0")
    while i >= 0:                                           # every frame's SOF0: length, precision, height, width
        struct.pack_into(">HH", data, i + 5, side, side)
        i = data.find(b"\xff\xc0", i + 2)
    struct.pack_into("<II", data, data.find(b"avih") + 40, side, side)    # MainAVIHeader dwWidth, dwHeight
    struct.pack_into("<ii", data, data.find(b"strf") + 12, side, side)    # BITMAPINFOHEADER biWidth, biHeight
    path.write_bytes(bytes(data))
    return path


def test_a_video_declaring_144_megapixel_frames_is_refused_before_a_frame_is_read(tmp_path, monkeypatch, capsys):
    p = lying_video(tmp_path / "huge.avi", 12000)            # under FFmpeg's own limit (~268 Mpx), over ours
    reads = []
    real = cv2.VideoCapture

    class Counting:
        def __init__(self, *a):
            self.cap = real(*a)

        def read(self):
            reads.append(1)
            return self.cap.read()

        def __getattr__(self, name):
            return getattr(self.cap, name)
    monkeypatch.setattr(sources.live.cv2, "VideoCapture", Counting)
    with pytest.raises(sources.SourceError, match=r"video 'huge.avi' declares 12000x12000 frames \(144 megapixels\)"):
        sources.open(p)
    assert reads == []
    assert main(["export", "--input", str(p), "--layer", "features.0", "--out", str(tmp_path / "o")]) == 2
    assert "declares 12000x12000 frames" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("fmt", [".png", ".jpg", ".bmp", ".tiff", ".webp", ".ppm", ".pgm", ".hdr", ".ras"])
def test_the_header_size_is_read_for_every_common_format(tmp_path, fmt):
    from cnnvis_gui.sources.headers import declared_size
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    if fmt == ".pgm":
        img = img[..., 0]
    if fmt == ".hdr":
        img = img.astype(np.float32) / 255
    ok, buf = cv2.imencode(fmt, img)
    if not ok:
        pytest.skip(f"this OpenCV cannot write {fmt}")
    assert declared_size(buf.tobytes()) == (53, 37)


def test_opencvs_own_limit_is_one_line_for_a_format_whose_header_is_not_read(tmp_path, monkeypatch):
    from cnnvis_gui.sources import base
    p = tmp_path / "huge.png"
    p.write_bytes(lying_png(100000, 100000, rows=2))
    monkeypatch.setattr(base, "declared_size", lambda data: None)         # as for an OpenEXR file
    with pytest.raises(sources.SourceError, match=r"OpenCV refused it: pixels <= CV_IO_MAX_IMAGE_PIXELS"):
        base.load_image(p)


def test_labels_index_of_10_to_the_12_is_refused_before_the_list_is_built(tmp_path, capsys):
    p = tmp_path / "labels.json"
    p.write_text(json.dumps({"1000000000000": "x"}))
    with pytest.raises(ModelLoadError, match=r"label index 1,000,000,000,000 is outside 0..1,048,575"):
        load_labels(p)
    ckpt = tmp_path / "w.pth"          # the same mapping inside a small checkpoint's metadata
    torch.save({"state_dict": shapes_state_dict(), "cnnvis": {
        "arch": "cnnvis_gui.models.demo_nets:ShapesNet", "labels": {"1000000000000": "x"}}}, ckpt)
    assert ckpt.stat().st_size < 400_000
    with pytest.raises(ModelLoadError, match="label index 1,000,000,000,000"):
        load(ckpt)
    assert main(["info", "--model", str(ckpt)]) == 2
    assert "label index" in _one_line(capsys.readouterr().err)


def test_spec_channels_of_3e8_is_refused_before_per_channel_tuples(monkeypatch):
    from cnnvis_gui.core import spec as spec_mod
    monkeypatch.setattr(spec_mod, "_as_tuple", lambda *a: pytest.fail("per-channel values were built"))
    with pytest.raises(CnnvisError, match=r"300000000x1x1: one input would hold 300,000,000 values"):
        InputSpec(channels=300_000_000, height=1, width=1, mean=0.5)
    with pytest.raises(CnnvisError, match=r"channels is 5,000, outside 1..4,096"):
        InputSpec(channels=5000, height=8, width=8)


def test_num_classes_from_a_file_is_compared_with_the_files_shapes_before_building(tmp_path, monkeypatch, capsys):
    from cnnvis_gui.models import loader
    ckpt = tmp_path / "w.pth"
    torch.save({"state_dict": shapes_state_dict(), "cnnvis": {
        "arch": "cnnvis_gui.models.demo_nets:ShapesNet", "arch_kwargs": {"num_classes": 2_500_000}}}, ckpt)
    monkeypatch.setattr(loader, "build_arch", lambda *a, **k: pytest.fail("the architecture was built"))
    with pytest.raises(ModelLoadError, match=r"num_classes=2,500,000 is larger than every dimension of the weights"):
        load(ckpt)
    monkeypatch.undo()
    assert main(["info", "--model", str(ckpt)]) == 2
    assert "num_classes=2,500,000" in _one_line(capsys.readouterr().err)
    # without a weight file, the caller's own num_classes is bounded too
    assert main(["info", "--model", "torchvision:resnet18", "--arch-kwarg", "num_classes=2500000"]) == 2
    assert "more than the 1,048,576" in _one_line(capsys.readouterr().err)


def test_a_part_counting_10_to_the_12_shards_is_refused_at_once(tmp_path, capsys):
    d = tmp_path / "p"
    d.mkdir()
    (d / "atlas-part.json").write_text(json.dumps({
        "version": 2, "count": 10 ** 12, "index": 0, "range": [0, 1], "images": 1, "k": 1, "layers": ["x"],
        "weights": "w", "files": "f", "spec": {}, "folder": str(tmp_path), "recursive": True}))
    np.savez(d / "atlas-part.npz", next_index=np.array(1), skipped_paths=np.array([], str),
             skipped_reasons=np.array([], str))
    assert main(["atlas", "merge", str(d), "--no-montage", "--no-cache", "--out", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "its 'count' is 1,000,000,000,000, outside 1..65,536" in line


@pytest.mark.parametrize("args,words", [
    (["info", "--threads", "100000"], "--threads must be at most 1024"),
    (["info", "--threads", "20000"], "--threads must be at most 1024"),
    (["export", "--input", "{img}", "--layer", "features.0", "--input-size", "8192", "--zoom", "32", "--out", "{o}"],
     "would become 262144x262144"),
    (["optimize", "--layer", "features.0", "--unit", "0", "--input-size", "4096", "--zoom", "16", "--out", "{o}.png"],
     "would become 65536x65536"),
    (["atlas", "--images", "{o}", "--layer", "features.0", "--probes", "1000000000", "--out", "{o}"],
     "--probes must be at most 256"),
    (["atlas", "--images", "{o}", "--layer", "features.0", "--top", "1000000000", "--out", "{o}"],
     "--top must be at most 10000"),
    (["atlas", "--images", "{o}", "--layer", "features.0", "--workers", "100000", "--out", "{o}"],
     "--workers must be at most 64"),
    (["export", "--input", "{img}", "--layer", "features.0", "--batch-size", "100000000", "--out", "{o}"],
     "--batch-size is 100,000,000, outside 1..87,381"),
])
def test_sizes_from_arguments_are_bounded_with_one_line(tmp_path, capsys, args, words):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((8, 8, 3), np.uint8))
    args = [a.format(img=img, o=tmp_path / "o") for a in args]
    assert main(args) == 2
    assert words in _one_line(capsys.readouterr().err)


def test_an_npz_declaring_a_huge_array_is_not_loaded(tmp_path, monkeypatch):
    """A 1 KB part archive whose array header declares 10^12 floats: refused on the header."""
    import io
    import zipfile

    from cnnvis_gui.atlas import cache
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)})
    p = tmp_path / "atlas-part.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("v0.npy", b"\x93NUMPY\x01\x00" + head.getvalue()[8:] + b"\0" * 64)
    assert p.stat().st_size < 2000
    from cnnvis_gui.core.bounds import npz_declared_bytes
    assert npz_declared_bytes(p) == 8 * 10 ** 12
    monkeypatch.setattr(cache.np, "load", lambda *a, **k: pytest.fail("the arrays were loaded"))
    assert cache.load_npz(p) is None
