"""Fuzz the readers of files from elsewhere: checkpoint metadata and sidecars, input specs, labels, atlas parts.

    python tools/fuzz_inputs.py                       # every target, 500 examples each (a few minutes)
    python tools/fuzz_inputs.py -n 5000 -t labels     # one target, longer
    python tools/fuzz_inputs.py --memory-gb 1         # address space allowed past the imports (default 2 GB)

The contract each target checks (the README's security section): whatever the bytes, the reader
returns a value of the documented type or raises the project's one error type
(:class:`~cnnvis_gui.core.CnnvisError`, whose subclasses carry the one-line message), in bounded
memory and time.  Any other exception (TypeError, RecursionError, MemoryError, OverflowError...)
is a finding: hypothesis shrinks it to a small example, which is printed.  Run before a release,
not in CI; ``tests/security/test_fuzz_inputs.py`` runs every target for a few examples so the
harness itself stays working.

Built on hypothesis (https://hypothesis.works): strategies below generate JSON-like documents,
raw bytes, and mutations of valid files (a real atlas part, a real checkpoint's metadata).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from cnnvis_gui.core import CnnvisError, InputSpec  # noqa: E402

# ---------------------------------------------------------------------------- strategies
_SCALARS = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.sampled_from([10 ** 12, 3 * 10 ** 8, -1, 0])
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
            | st.sampled_from(["\x1b[2K\x1b[1A", "../..", "nan", "3", "", "\u202e"]))
JSON = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
                    max_leaves=20)
SPEC_KEYS = list(InputSpec.__dataclass_fields__)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def spec_dicts():
    """Input-spec dicts: the known keys with any JSON value (and sometimes an unknown key)."""
    values = {
        "channels": st.one_of(st.integers(-3, 10 ** 9), JSON),
        "height": st.one_of(st.integers(-3, 10 ** 6), JSON), "width": st.one_of(st.integers(-3, 10 ** 6), JSON),
        "mean": st.one_of(JSON, st.lists(st.floats(), max_size=5)), "std": st.one_of(JSON, st.lists(st.floats(), max_size=5)),
        "scale": st.one_of(st.floats(), JSON), "channel_order": st.one_of(st.sampled_from(["RGB", "bgr", "XYZ"]), JSON),
        "fit": st.one_of(st.sampled_from(["crop", "stretch", "letterbox"]), JSON)}
    return st.fixed_dictionaries({}, optional=values) | st.dictionaries(st.text(max_size=8), JSON, max_size=4)


def labels_documents():
    """What a labels file may hold: lines, JSON lists and mappings (indices as keys), JSON junk, raw bytes."""
    mapping = st.dictionaries(st.one_of(st.integers(-5, 10 ** 13).map(str), st.text(max_size=6)), JSON, max_size=6)
    doc = st.one_of(st.lists(JSON, max_size=8), mapping, st.fixed_dictionaries({"labels": st.one_of(st.lists(JSON),
                                                                                                     mapping)}), JSON)
    return st.one_of(doc.map(lambda d: json.dumps(d).encode()), st.binary(max_size=200),
                     st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
                     st.integers(10, 200000).map(lambda n: _deep(n).encode()))


def metadata_dicts():
    """A checkpoint's ``"cnnvis"`` metadata: the known keys with any value."""
    keys = {"spec": st.one_of(spec_dicts(), JSON), "labels": st.one_of(st.lists(JSON, max_size=12), JSON,
                                                                       st.dictionaries(st.text(max_size=14), JSON)),
            "name": JSON, "arch": st.one_of(st.sampled_from(["cnnvis_gui.models.demo_nets:ShapesNet",
                                                             "torchvision:resnet18", "timm:nope", ""]), JSON),
            "arch_kwargs": st.one_of(st.dictionaries(st.sampled_from(["num_classes", "width", "pretrained", "x"]),
                                                     st.one_of(st.integers(-1, 10 ** 8), JSON), max_size=3), JSON)}
    return st.fixed_dictionaries({}, optional=keys)


# ---------------------------------------------------------------------------- targets
class Finding(AssertionError):
    """A reader raised something other than the project's one error type."""


def _contract(call):
    """Run ``call()``; a CnnvisError is an answer, anything else a finding."""
    try:
        return call()
    except CnnvisError:
        return None
    except Exception as e:  # noqa: BLE001 - that is what the fuzzer looks for
        raise Finding(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}") from None


def target_spec(examples: int):
    """InputSpec from a spec dict as metadata gives it (``_spec_dict`` then the constructor)."""
    from cnnvis_gui.core.bounds import MAX_INPUT_VALUES
    from cnnvis_gui.models.probe import _spec_dict

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(spec_dicts())
    def run(d):
        spec = _contract(lambda: InputSpec(**{"height": 224, "width": 224, **_spec_dict(d, "spec")}))
        if spec is not None:
            assert spec.channels * spec.height * spec.width <= MAX_INPUT_VALUES
            assert all(math.isfinite(v) for v in spec.mean + spec.std + (spec.scale,)) and 0 not in spec.std
    run()


def target_labels(examples: int):
    """``load_labels`` on a file with any bytes in it."""
    from cnnvis_gui.core.bounds import MAX_LABELS
    from cnnvis_gui.models import load_labels

    folder = Path(tempfile.mkdtemp(prefix="fuzz-labels-"))

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(labels_documents(), st.sampled_from(["labels.json", "labels.txt"]))
    def run(data, name):
        p = folder / name
        p.write_bytes(data)
        labels = _contract(lambda: load_labels(p))
        if labels is not None:
            assert isinstance(labels, list) and len(labels) <= MAX_LABELS and all(isinstance(s, str) for s in labels)
    run()


def _shapes_state_dict():
    import torch
    from cnnvis_gui.models import demo_checkpoint
    return torch.load(demo_checkpoint("shapes"), weights_only=True)["state_dict"]


def target_metadata(examples: int):
    """``models.load`` of a checkpoint whose ``"cnnvis"`` metadata is fuzzed, and of one with a fuzzed sidecar."""
    import torch
    from cnnvis_gui.models import load

    sd = _shapes_state_dict()
    folder = Path(tempfile.mkdtemp(prefix="fuzz-meta-"))

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(metadata_dicts(), st.one_of(st.none(), metadata_dicts().map(lambda d: json.dumps(d).encode()),
                                       labels_documents()))
    def run(meta, sidecar):
        p = folder / "w.pth"
        buf = io.BytesIO()
        torch.save({"state_dict": sd, "cnnvis": meta}, buf)
        p.write_bytes(buf.getvalue())
        side = folder / "w.json"
        if sidecar is None:
            side.unlink(missing_ok=True)
        else:
            side.write_bytes(sidecar)
        lm = _contract(lambda: load(p, device="cpu"))
        if lm is not None:
            assert lm.labels is None or all(isinstance(s, str) for s in lm.labels)
    run()


def _valid_part(folder: Path):
    """A real atlas part (two shards of a tiny scan): the starting point of every mutation."""
    import cv2
    from cnnvis_gui.atlas.merge import part_from_scan, write_part
    from cnnvis_gui.atlas.scan import TopKScan
    from cnnvis_gui.models import demo

    rng = np.random.default_rng(0)
    (folder / "im").mkdir(parents=True)
    for i in range(8):
        cv2.imwrite(str(folder / "im" / f"{i}.png"), rng.integers(0, 255, (40, 40, 3), np.uint8))
    lm = demo("shapes", device="cpu")
    dirs = []
    for i in range(2):
        s = TopKScan(lm.model, lm.spec, folder / "im", ["features.3"], k=2, batch_size=4, cache_dir=folder / "c",
                     shard=(i, 2))
        for _ in s.run():
            pass
        write_part(folder / f"p{i}", part_from_scan(s, "shapes"))
        dirs.append(folder / f"p{i}")
    return dirs


def _random_array():
    dtypes = st.sampled_from([np.int64, np.int32, np.float32, np.float64, np.uint8, np.bool_])
    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
    return st.tuples(dtypes, shapes, st.integers(-2 ** 31, 2 ** 31)).map(
        lambda t: np.full(t[1], t[2] % 1000 if t[0] in (np.uint8, np.bool_) else t[2]).astype(t[0]))


def target_part(examples: int):
    """``read_part`` + ``merge_parts`` on a real part whose meta fields and arrays are replaced or dropped."""
    from cnnvis_gui.atlas.merge import PART_JSON, PART_NPZ, merge_parts, read_part

    folder = Path(tempfile.mkdtemp(prefix="fuzz-part-"))
    good = _valid_part(folder)
    meta0 = json.loads((good[0] / PART_JSON).read_text())
    with np.load(good[0] / PART_NPZ) as z:
        arrays0 = {k: z[k] for k in z.files}
    other = read_part(good[1])
    bad = folder / "bad"
    bad.mkdir()

    meta_edit = st.one_of(st.tuples(st.sampled_from(sorted(meta0)), JSON),
                          st.tuples(st.sampled_from(["count", "index", "images", "k"]),
                                    st.sampled_from([10 ** 12, -1, 0, 2 ** 63, 1.5, "2", None])),
                          st.tuples(st.sampled_from(sorted(meta0)), st.just("<drop>")))
    array_edit = st.tuples(st.sampled_from(sorted(arrays0)), st.one_of(_random_array(), st.just("<drop>")))

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(meta_edit, max_size=3), st.lists(array_edit, max_size=3))
    def run(meta_edits, array_edits):
        meta, arrays = dict(meta0), dict(arrays0)
        for k, v in meta_edits:
            meta.pop(k, None) if v == "<drop>" else meta.__setitem__(k, v)
        for k, v in array_edits:
            arrays.pop(k, None) if isinstance(v, str) else arrays.__setitem__(k, v)
        (bad / PART_JSON).write_text(json.dumps(meta))
        np.savez(bad / PART_NPZ, **arrays)
        part = _contract(lambda: read_part(bad))
        if part is not None:
            _contract(lambda: merge_parts([part, other]))
    run()


def _address_space() -> int:
    """The bytes of address space this process holds now (Linux: VmSize), else 0."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


TARGETS = {"spec": target_spec, "labels": target_labels, "metadata": target_metadata, "part": target_part}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--examples", type=int, default=500, help="examples per target (default 500)")
    p.add_argument("-t", "--target", action="append", choices=sorted(TARGETS), help="only these targets")
    p.add_argument("--memory-gb", type=float, default=2.0,
                   help="address space a run may take past what the imports reserve (default 2 GB; torch alone "
                        "reserves some 3.5 GB of address space it never touches)")
    args = p.parse_args(argv)
    import cnnvis_gui.atlas.merge  # noqa: F401 - everything a target imports, before the limit is measured
    import cnnvis_gui.models  # noqa: F401
    limit = _address_space() + int(args.memory_gb * 2 ** 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    print(f"address space limited to {limit / 2 ** 30:.1f} GB ({args.memory_gb:g} GB past the imports)", flush=True)
    failed = 0
    for name in args.target or sorted(TARGETS):
        t0 = time.perf_counter()
        try:
            TARGETS[name](args.examples)
            print(f"{name:9s} ok        {args.examples} examples in {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception as e:  # noqa: BLE001 - report every target
            failed += 1
            where = "" if isinstance(e, Finding) else "\n" + "".join(traceback.format_exception(e)[-8:])
            print(f"{name:9s} FINDING   {type(e).__name__}: {str(e)[:2000]}{where}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
