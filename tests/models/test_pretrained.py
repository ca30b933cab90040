"""Pretrained weights by name: cache lookup, metadata from the weights, offline failure, downloads.

The caches are temp folders seeded with random-init state dicts under the real file names
(see ``pretrained_helpers``); nothing here touches the network except a local HTTP server.
"""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import urllib.request

import pytest
import torch

from cnnvis_gui.models import ModelLoadError, load
from cnnvis_gui.models import download as dl
from cnnvis_gui.models import pretrained as P

from .pretrained_helpers import (TIMM_ARCH, TIMM_REPO, TV_ARCH, TV_FILE, seed_timm, seed_torchvision,
                                 use_caches)

tvm = pytest.importorskip("torchvision.models")


def same(model, sd) -> bool:
    got = model.state_dict()
    return all(torch.equal(got[k], v) for k, v in sd.items())


@pytest.fixture
def caches(tmp_path, monkeypatch):
    return use_caches(monkeypatch, tmp_path)


@pytest.fixture
def network(monkeypatch):
    """Every connection attempt and download, recorded: ``("connect", (host, port), timeout)`` /
    ``("urlopen", url, timeout)``.  Connections still go through (to a local port at most).

    "Fails fast" is checked by what was tried, not by a clock: offline, nothing at all; an
    unreachable host, one probe with a bounded timeout and no download.
    """
    calls = []
    real_connect, real_urlopen = socket.socket.connect, urllib.request.urlopen

    def connect(sock, address):              # every TCP client (urllib, urllib3, httpx) ends here
        calls.append(("connect", tuple(address)[:2], sock.gettimeout()))
        return real_connect(sock, address)

    def urlopen(url, *a, timeout=None, **k):
        calls.append(("urlopen", getattr(url, "full_url", url), timeout))
        return real_urlopen(url, *a, timeout=timeout, **k)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


# ============================================================================ torchvision
def test_torchvision_default_weights_from_the_cache(caches):
    path, sd = seed_torchvision(caches[0])
    lm = load(arch=TV_ARCH, pretrained=True)
    assert same(lm.model, sd)                                    # the seeded file, not random init
    assert lm.labels is not None and len(lm.labels) == 1000 and lm.labels[0] == "tench"
    t = tvm.ResNet18_Weights.IMAGENET1K_V1.transforms()
    assert (lm.spec.height, lm.spec.width) == (224, 224) == (t.crop_size[0], t.crop_size[0])
    assert lm.spec.mean == pytest.approx(tuple(t.mean)) and lm.spec.std == pytest.approx(tuple(t.std))
    assert lm.spec.mean == pytest.approx((0.485, 0.456, 0.406)) and lm.spec.std == pytest.approx((0.229, 0.224, 0.225))
    assert lm.name == "resnet18 · IMAGENET1K_V1" and lm.pretrained == "IMAGENET1K_V1"
    assert any(str(path) in n for n in lm.notes)
    assert not lm.model.training


@pytest.mark.parametrize("name", ["imagenet1k_v1", "ResNet18_Weights.IMAGENET1K_V1"])
def test_torchvision_weights_by_name(caches, name):
    _, sd = seed_torchvision(caches[0])
    lm = load(arch=TV_ARCH, pretrained=name, device="cpu")
    assert same(lm.model, sd) and lm.pretrained == "IMAGENET1K_V1"


def test_unknown_weights_name_lists_the_valid_ones(caches):
    with pytest.raises(ModelLoadError) as e:
        load(arch="torchvision:resnet50", pretrained="IMAGENET1K_V3")
    msg = str(e.value)
    assert "IMAGENET1K_V1" in msg and "IMAGENET1K_V2 (default)" in msg and "V3" in msg


def test_the_default_is_the_libraries_default(caches):
    assert P.resolve("torchvision:resnet50", True).variant == tvm.ResNet50_Weights.DEFAULT.name == "IMAGENET1K_V2"


def test_missing_file_offline_fails_fast_naming_file_url_and_path(caches, network):
    with pytest.raises(ModelLoadError) as e:
        load(arch="torchvision:resnet50", pretrained="IMAGENET1K_V2")
    assert network == []                                     # offline: not even a probe
    url = tvm.ResNet50_Weights.IMAGENET1K_V2.url
    fname = url.rsplit("/", 1)[1]
    want = caches[0] / "hub" / "checkpoints" / fname
    msg = str(e.value)
    assert fname in msg and url in msg and str(want) in msg and "\n" not in msg


def test_missing_file_with_an_unreachable_host_fails_fast(caches, monkeypatch, network):
    """Not offline by configuration: the connection attempt itself is bounded and reported."""
    monkeypatch.delenv("CNNVIS_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    ref = P.resolve("torchvision:resnet50", True)
    object.__setattr__(ref, "url", "http://127.0.0.1:9/resnet50-11ad3fa6.pth")   # nothing listens on port 9
    with pytest.raises(ModelLoadError) as e:
        P.fetch(ref)
    assert network == [("connect", ("127.0.0.1", 9), dl.CONNECT_TIMEOUT_S)]    # one bounded probe, no download
    assert 0 < dl.CONNECT_TIMEOUT_S <= 30
    assert "127.0.0.1:9" in str(e.value) and str(ref.cache_path) in str(e.value)
    assert not ref.cache_path.exists()


def test_pretrained_needs_a_named_architecture_and_no_weight_file(caches, tmp_path):
    with pytest.raises(ModelLoadError, match="torchvision and timm"):
        load(arch="cnnvis_gui.models.demo_nets:ShapesNet", pretrained=True)
    f = tmp_path / "w.pth"
    torch.save({}, f)
    with pytest.raises(ModelLoadError, match="not both"):
        load(f, arch=TV_ARCH, pretrained=True)


def test_constructor_arguments_that_contradict_the_weights_are_one_clear_error(caches):
    seed_torchvision(caches[0])
    with pytest.raises(ModelLoadError, match="num_classes"):
        load(arch=TV_ARCH, pretrained=True, num_classes=10)


def test_a_cached_file_of_another_network_is_named(caches):
    seed_torchvision(caches[0], name="resnet34", file=TV_FILE)
    with pytest.raises(ModelLoadError) as e:
        load(arch=TV_ARCH, pretrained=True)
    assert TV_FILE in str(e.value) and "delete" in str(e.value)


def test_a_cached_file_is_read_without_unpickling_code(caches):
    path = caches[0] / "hub" / "checkpoints" / TV_FILE
    path.parent.mkdir(parents=True)
    torch.save({"x": torch.zeros(1), "obj": dl.DownloadCancelled("x")}, path)   # a pickled class object
    with pytest.raises(ModelLoadError):
        load(arch=TV_ARCH, pretrained=True)


def test_catalog_lists_classification_models_and_which_are_cached(caches):
    seed_torchvision(caches[0])
    rows = P.catalog("torchvision")
    names = {(r.arch, r.variant) for r in rows}
    assert ("torchvision:resnet50", "IMAGENET1K_V2") in names and ("torchvision:resnet50", "IMAGENET1K_V1") in names
    assert not any("fasterrcnn" in r.arch for r in rows)                # detection is not in the list
    cached = [r for r in rows if r.cached]
    assert [(r.arch, r.variant) for r in cached] == [(TV_ARCH, "IMAGENET1K_V1")]
    assert sum(r.is_default for r in rows if r.arch == "torchvision:resnet50") == 1


# ============================================================================ timm
def test_timm_default_weights_from_the_huggingface_cache(caches):
    pytest.importorskip("timm")
    path, sd = seed_timm(caches[1])
    lm = load(arch=TIMM_ARCH, pretrained=True)
    assert same(lm.model, sd)
    assert len(lm.labels) == 1000 and lm.labels[0] == "tench"
    import timm.data
    cfg = timm.data.resolve_model_data_config(lm.model)
    assert (lm.spec.channels, lm.spec.height, lm.spec.width) == tuple(cfg["input_size"])
    assert lm.spec.mean == pytest.approx(cfg["mean"]) and lm.spec.std == pytest.approx(cfg["std"])
    assert lm.name == "resnet18 · a1_in1k"
    assert any(str(path) in n for n in lm.notes)


def test_timm_tag_by_name_and_unknown_tag(caches):
    pytest.importorskip("timm")
    seed_timm(caches[1])
    assert load(arch=TIMM_ARCH, pretrained="a1_in1k").pretrained == "a1_in1k"
    with pytest.raises(ModelLoadError) as e:
        load(arch=TIMM_ARCH, pretrained="nope")
    assert "a1_in1k" in str(e.value) and "tv_in1k" in str(e.value)


def test_timm_missing_offline_fails_fast_naming_file_url_and_path(caches, network):
    pytest.importorskip("timm")
    with pytest.raises(ModelLoadError) as e:
        load(arch=TIMM_ARCH, pretrained="a2_in1k")
    assert network == []
    msg = str(e.value)
    ref = P.resolve(TIMM_ARCH, "a2_in1k")
    assert ref.url in msg and str(ref.cache_path) in msg and ref.cache_path.name in msg


def test_timm_catalog_marks_the_cached_tag(caches):
    pytest.importorskip("timm")
    seed_timm(caches[1])
    rows = [r for r in P.catalog("timm") if r.arch == TIMM_ARCH]
    assert {r.variant for r in rows if r.cached} == {"a1_in1k"}
    assert TIMM_REPO.endswith([r for r in rows if r.is_default][0].variant)


# ============================================================================ download
class _Server:
    def __init__(self, payload: bytes):
        payload_ = payload

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload_)))
                self.end_headers()
                for i in range(0, len(payload_), 1 << 16):
                    self.wfile.write(payload_[i:i + (1 << 16)])

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("CNNVIS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    payload = bytes(range(256)) * 12000       # ~3 MB: several chunks
    s = _Server(payload)
    s.payload = payload
    s.sha = hashlib.sha256(payload).hexdigest()
    yield s
    s.close()


def test_download_writes_the_file_with_progress_and_checks_the_hash(server, tmp_path):
    seen = []
    dest = tmp_path / "c" / f"net-{server.sha[:8]}.pth"
    out = dl.download(server.url + "/x", dest, progress=lambda d, t: seen.append((d, t)))
    assert out == dest and dest.read_bytes() == server.payload
    assert seen[-1] == (len(server.payload), len(server.payload)) and len(seen) >= 3
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert list(dest.parent.iterdir()) == [dest]                       # no temporary file left


def test_download_with_a_wrong_hash_keeps_nothing(server, tmp_path):
    dest = tmp_path / "net-deadbeef.pth"
    with pytest.raises(ModelLoadError, match="corrupt"):
        dl.download(server.url + "/x", dest)
    assert list(tmp_path.iterdir()) == []


def test_download_cancel_keeps_nothing(server, tmp_path):
    cancel = threading.Event()
    dest = tmp_path / "net.pth"

    def progress(done, total):
        cancel.set()

    with pytest.raises(dl.DownloadCancelled):
        dl.download(server.url + "/x", dest, progress=progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_fetch_downloads_into_torchs_hub_cache(server, caches, monkeypatch):
    monkeypatch.delenv("CNNVIS_OFFLINE")
    ref = P.resolve(TV_ARCH, True)
    object.__setattr__(ref, "url", server.url + "/resnet18.pth")
    with pytest.raises(ModelLoadError, match="corrupt"):   # the payload's hash is not f37072fd...
        P.fetch(ref)
    assert not ref.cache_path.exists()


def test_offline_switch(monkeypatch):
    monkeypatch.delenv("CNNVIS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not dl.offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert dl.offline() and "offline" in dl.unreachable("https://example.invalid/x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("CNNVIS_OFFLINE", "yes")
    assert dl.offline()
    assert dl.hash_prefix("resnet18-f37072fd.pth") == "f37072fd" and dl.hash_prefix("model.safetensors") is None


def test_timms_own_pretrained_switch_goes_through_the_cache_first(caches, tmp_path, network):
    """``--arch-kwarg pretrained=True`` / metadata ``arch_kwargs`` never reach timm's unbounded download."""
    pytest.importorskip("timm")
    from types import SimpleNamespace
    from cnnvis_gui.options import model_from_args
    _, sd = seed_timm(caches[1])
    lm = model_from_args(SimpleNamespace(model=TIMM_ARCH, arch_kwarg=["pretrained=True"], device="cpu"))
    assert same(lm.model, sd) and lm.pretrained == "a1_in1k"
    with pytest.raises(ModelLoadError, match="not in the cache"):
        model_from_args(SimpleNamespace(model="timm:resnet50", arch_kwarg=["pretrained=True"], device="cpu"))
    assert network == []                                    # timm's own (unbounded) download never ran
    # a checkpoint whose metadata asks timm for pretrained weights (allowed: trust_code): the file's
    # weights, nothing fetched
    import timm
    torch.manual_seed(9)
    own = timm.create_model("resnet34").state_dict()
    f = tmp_path / "mine.pth"
    torch.save({"state_dict": own, "cnnvis": {"arch": "timm:resnet34", "arch_kwargs": {"pretrained": True}}}, f)
    lm = load(f, device="cpu", trust_code=True)
    assert same(lm.model, own) and lm.pretrained is None
    assert any("pretrained=True ignored" in n for n in lm.notes)


def test_the_source_names_the_weights_file(caches):
    path, _ = seed_torchvision(caches[0])
    lm = load(arch=TV_ARCH, pretrained=True)
    assert lm.source == f"{path} + {TV_ARCH}"


class _Tty:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_terminal_progress_draws_a_bar_on_a_terminal_only():
    tty = _Tty()
    cb = dl.terminal_progress("resnet50 weights", stream=tty)
    for done in (1 << 20, 50 << 20, 100 << 20):
        cb(done, 100 << 20)
    assert "resnet50 weights" in tty.text and "100%" in tty.text
    import io
    assert dl.terminal_progress("x", stream=io.StringIO()) is None
