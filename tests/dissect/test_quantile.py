"""The thresholds: ``np.quantile(values, 1 - Q)`` to the bit from merged top tails, and the
streaming sketch within its stated bound, merged exactly too."""
import numpy as np
import pytest
import torch

from cnnvis_gui.dissect.quantile import SKETCH_ACCURACY, LogSketch, TopTail, quantile_from_tail, tail_size


def _parts(values, cuts, m, dtype):
    out = []
    for a, b in zip([0] + cuts, cuts + [values.shape[1]]):
        t = TopTail.empty(values.shape[0], m, dtype)
        t.add(torch.from_numpy(values[:, a:b]))
        out.append(t)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merged_tails_give_np_quantile_to_the_bit(dtype):
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 3000))
        Q = float(rng.choice([0.005, 0.01, 0.1, 0.37, 0.5, rng.uniform(0.0001, 0.9)]))
        v = (rng.normal(size=(3, n)) * rng.choice([1e-3, 1, 1e4])).astype(dtype)
        if trial % 4 == 0:
            v = np.round(v, 1)                           # many ties
        cuts = sorted(rng.integers(0, n, int(rng.integers(0, 4))).tolist())
        got = TopTail.merge(_parts(v, cuts, tail_size(n + int(rng.integers(0, 50)), 1 - Q), dtype)).thresholds(1 - Q)
        want = np.array([np.quantile(r, 1 - Q) for r in v])
        assert got.dtype == want.dtype and np.array_equal(got, want), (n, Q)


def test_a_tail_too_short_for_its_count_is_refused():
    with pytest.raises(ValueError, match="needs the top"):
        quantile_from_tail(np.zeros((1, 2), np.float32), 1000, 0.995)


def test_nan_counts_as_minus_infinity():
    v = np.array([[np.nan, 1.0, 2.0, 3.0, np.nan]], np.float32)
    t = TopTail.empty(1, 5)
    t.add(torch.from_numpy(v))
    assert t.thresholds(0.5)[0] == np.quantile(np.array([-np.inf, -np.inf, 1, 2, 3], np.float32), 0.5)


def test_the_sketch_is_within_its_bound_and_merges_exactly():
    rng = np.random.default_rng(1)
    v = np.concatenate([rng.lognormal(0, 2, (4, 5000)), -rng.lognormal(0, 1, (4, 500)), np.zeros((4, 300))],
                       1).astype(np.float32)
    whole = LogSketch.empty(4)
    whole.add(torch.from_numpy(v))
    parts = [LogSketch.empty(4) for _ in range(3)]
    for p, (a, b) in zip(parts, [(0, 100), (100, 4000), (4000, v.shape[1])]):
        p.add(torch.from_numpy(v[:, a:b]))
    merged = LogSketch.merge(parts)
    assert np.array_equal(merged.counts, whole.counts)
    for q in (0.995, 0.9, 0.5, 0.05, 0.01):
        exact = np.array([np.quantile(r, q) for r in v])
        got = merged.thresholds(q)
        assert np.all(np.abs(got - exact) <= SKETCH_ACCURACY * np.abs(exact) * 1.001 + 1e-30), q
