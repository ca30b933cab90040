"""Engine speed and memory against the bare-PyTorch floor, measured in one run.

For each network (random init, 1 x 3 x 224 x 224 by default, target: a unit of the
classifier) eight cases run interleaved, in a new random order each round (so that no case
always follows the one that freed the most memory), and each reports its median:

* bare forward        -- the same weights with parameters frozen, a forward hook on the
                         target layer, the input requiring grad (the graph a backward needs)
* ours: recorded fwd  -- ``Visualizer.forward`` (every module's output recorded), and
                         ``Visualizer.forward(x, layers=[target])`` (only the layer asked for)
* bare fwd + grad     -- bare forward + ``torch.autograd.grad`` of the unit to the input
* ours: new frame     -- ``Visualizer.forward`` + one guided-backprop saliency (both ways)
* bare backward       -- ``torch.autograd.grad`` on an already-built graph (retain_graph)
* ours: unit switch   -- another unit's guided saliency on the same Frame (backward only)

Malloc is tuned as the app tunes it (:mod:`cnnvis_gui.core.allocator`: freed memory is
reused, not page-faulted in again); ``--system-malloc`` leaves glibc's defaults, under which
page faults were ~20 % of a MobileNetV3 forward's CPU time here and the ratios moved by up to
+-0.1 between runs (which case runs after which decides how many faults it takes).

Two clocks: wall time, and the process's CPU time (all its threads), which other
processes on a shared machine disturb much less; the ratios use CPU time on the CPU
device, each the median over the rounds of the two cases' times in the same round.  Compare the ratios, not the milliseconds.  The load average is printed
before and after.

Memory: bytes of the distinct storages a frame keeps alive (its graph's saved tensors,
every recorded output, the inputs kept to recompute overwritten outputs) against the
bare graph's saved tensors plus the recorded outputs the graph does not hold anyway --
"extra" is what the engine holds beyond those two.

    python benchmarks/bench_engine.py [--models resnet50,mobilenet_v3_large,efficientnet_b0,resnet18]
        [--size 224] [--repeats 15] [--threads 1] [--device cpu] [--captum] [--system-malloc]
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
import warnings

import torch
import torch.nn as nn
import torchvision

from cnnvis_gui.core import Visualizer

MODELS = ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "resnet18")
LABELS = {"resnet50": "ResNet-50", "mobilenet_v3_large": "MobileNetV3-Large",
          "efficientnet_b0": "EfficientNet-B0", "resnet18": "ResNet-18"}


def _timeit(fn, sync):
    """(wall ms, process CPU ms) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync()
    return (time.perf_counter() - t0) * 1000.0, (time.process_time() - c0) * 1000.0


def _load():
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


# ----------------------------------------------------------------------------- memory
def _storages(tensors) -> dict:
    out = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            try:
                s = t.untyped_storage()
                out[s.data_ptr()] = s.nbytes()
            except (RuntimeError, NotImplementedError):
                pass
    return out


def _saved_tensors(roots) -> list:
    """Every tensor the graph under ``roots`` saved for its backward."""
    seen, stack, found = set(), [r for r in roots if r is not None], []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for attr in dir(node):
            if attr.startswith("_saved_"):
                try:
                    v = getattr(node, attr)
                except Exception:  # noqa: BLE001 - freed or unpackable saved values
                    continue
                found.extend(v if isinstance(v, (tuple, list)) else [v])
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return found


def _memory(model, frozen, x, layer):
    """(bare graph, recorded outputs, frame total, extra) in MiB for one frame."""
    store = {}
    h = dict(frozen.named_modules())[layer].register_forward_hook(lambda m, a, o: store.__setitem__("o", o))
    try:
        out = frozen(x.clone().requires_grad_(True))
    finally:
        h.remove()
    bare = _storages(_saved_tensors([out.grad_fn]) + [store["o"]])
    frame = Visualizer(model).forward(x)
    rec = frame._recording
    rec.calls  # noqa: B018 - builds the index (drops the inputs no recompute needs)
    graph = _storages(_saved_tensors([frame._out.grad_fn]))
    recorded = _storages(r[4] for r in rec.records)
    kept = _storages(a for r in rec.records if r[2] is not None for a in r[2])
    total = {**graph, **recorded, **kept}
    mib = 1 / 2 ** 20
    beyond_graph = sum(n for p, n in recorded.items() if p not in graph)
    frame.close()
    bare_total = sum(bare.values())
    return (bare_total * mib, beyond_graph * mib, sum(total.values()) * mib,
            (sum(total.values()) - bare_total - beyond_graph) * mib)


# ----------------------------------------------------------------------------- the rule's own floor
_RECTIFIERS = ("SiluBackward0", "HardswishBackward0", "GeluBackward0")   # the activations of these networks
_masked = torch.ops.aten.threshold_backward.default                      # (g, x, 0) -> g * [x > 0]


def plain_rule_hooks(root) -> int:
    """Guided backprop's generalized rule as a user would write it on a bare graph: plain node hooks.

    At a ReLU ``relu(g * [y > 0])``; at SiLU / Hardswish / GELU ``relu(g * f'(x)) * [x > 0]``
    (the rule of :mod:`cnnvis_gui.core.rules`, written out independently).  The floor of the
    *method*: what any implementation of it must compute beyond autograd's gradient.
    """
    seen, stack, n = set(), [root], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        kind = type(node).__name__
        if kind == "ReluBackward0":
            node.register_hook(lambda gi, go: (gi[0].clamp(min=0),))   # relu of autograd's g * [y > 0]
            n += 1
        elif kind in _RECTIFIERS:
            x = node._saved_self.detach()
            # the cheapest plain form: one fused mask op (g f'(x) where x > 0), then relu on that new tensor
            node.register_hook(lambda gi, go, x=x: (_masked(gi[0], x, 0).clamp_(min=0),) + gi[1:])
            n += 1
        stack.extend(m for m, _ in node.next_functions)
    return n


# ----------------------------------------------------------------------------- one network
def bench(name, args, dev, sync):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)().eval().to(dev)
    frozen = copy.deepcopy(model).requires_grad_(False)
    layer = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    x = torch.randn(1, 3, args.size, args.size, device=dev)
    vis = Visualizer(model)
    units = [3, 7]
    hooked = dict(frozen.named_modules())[layer]

    def bare_forward():
        store = {}
        h = hooked.register_forward_hook(lambda m, a, o: store.__setitem__("o", o))
        try:
            xr = x.clone().requires_grad_(True)
            frozen(xr)
        finally:
            h.remove()
        return xr, store["o"]

    def bare_grad():
        xr, o = bare_forward()
        torch.autograd.grad(o[:, units[0]].sum(), xr)

    xr_kept, kept = bare_forward()

    def bare_backward():
        torch.autograd.grad(kept[:, units[1]].sum(), xr_kept, retain_graph=True)

    def rule_grad():        # bare forward + the generalized guided rule as plain hooks + input gradient
        xr, o = bare_forward()
        root = o[:, units[0]].sum()
        plain_rule_hooks(root.grad_fn)
        torch.autograd.grad(root, xr)

    xr_rule, kept_rule = bare_forward()
    plain_rule_hooks(kept_rule.grad_fn)

    def rule_backward():
        torch.autograd.grad(kept_rule[:, units[1]].sum(), xr_rule, retain_graph=True)

    def ours_forward():
        vis.forward(x).close()

    def ours_new():
        f = vis.forward(x)
        f.saliency(layer, units[0], "guided")
        f.close()

    def lean_forward():
        vis.forward(x, layers=[layer]).close()

    def lean_new():
        f = vis.forward(x, layers=[layer])
        f.saliency(layer, units[0], "guided")
        f.close()

    frame = vis.forward(x)

    def ours_switch():
        frame.saliency(layer, units[1], "guided")

    # networks with SiLU, Hardswish, ...: guided there runs the generalized rule (more work than
    # autograd's); the same cases with the rules at ReLUs only (what the engine did before) isolate
    # the engine's own overhead
    general = bool(frame.generalized_activations)
    vis_relu = Visualizer(model, activations="relu-only")
    frame_relu = vis_relu.forward(x)

    def relu_new():
        f = vis_relu.forward(x, layers=[layer])
        f.saliency(layer, units[0], "guided")
        f.close()

    def relu_switch():
        frame_relu.saliency(layer, units[1], "guided")

    cases = {"bare forward": bare_forward, "ours: recorded forward": ours_forward,
             "ours: recorded forward, asked layer": lean_forward,
             "bare forward + input grad": bare_grad, "ours: new guided frame": ours_new,
             "ours: new guided frame, asked layer": lean_new,
             "bare backward (retained graph)": bare_backward, "ours: unit switch (guided)": ours_switch}
    if general:
        cases["ours: new guided frame, asked layer, relu-only"] = relu_new
        cases["ours: unit switch, relu-only"] = relu_switch
        cases["bare fwd + grad, rule as plain hooks"] = rule_grad
        cases["bare backward, rule as plain hooks"] = rule_backward
    if args.captum:
        from captum.attr import NeuronGuidedBackprop
        ngb = NeuronGuidedBackprop(model, dict(model.named_modules())[layer])

        def captum_gb():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ngb.attribute(x.clone(), neuron_selector=units[0])
        cases["captum NeuronGuidedBackprop"] = captum_gb

    for fn in cases.values():  # warm-up
        fn()
        fn()
    sync()
    wall = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    load0 = _load()
    order = list(cases)
    shuffle = random.Random(0).shuffle
    for _ in range(args.repeats):
        shuffle(order)
        for k in order:
            fn = cases[k]
            w, c = _timeit(fn, sync)
            wall[k].append(w)
            cpu[k].append(c)
    load1 = _load()
    wmed = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    frame.close()
    frame_relu.close()
    mem = _memory(model, frozen, x, layer) if dev.type == "cpu" else None

    print(f"\n{LABELS.get(name, name)}, input 1x3x{args.size}x{args.size}, target {layer!r}, median of "
          f"{args.repeats}, load average {load0:.1f} -> {load1:.1f}")
    print(f"  {'case':38s} {'wall ms':>9s} {'CPU ms':>9s}")
    for k in cases:
        print(f"  {k:38s} {wmed[k]:9.2f} {cmed[k]:9.2f}")
    samples = cpu if dev.type == "cpu" else wall

    def ratio(case, base):
        """Median over the rounds of case / base measured in the same round (paired: a slow
        stretch of the shared machine hits both)."""
        if case not in samples or base not in samples:
            return float("nan")
        return statistics.median(c / b for c, b in zip(samples[case], samples[base]))

    r = {"fwd": ratio("ours: recorded forward, asked layer", "bare forward"),
         "fwd all": ratio("ours: recorded forward", "bare forward"),
         "new": ratio("ours: new guided frame, asked layer", "bare forward + input grad"),
         "new all": ratio("ours: new guided frame", "bare forward + input grad"),
         "switch": ratio("ours: unit switch (guided)", "bare backward (retained graph)"),
         "new relu": ratio("ours: new guided frame, asked layer, relu-only", "bare forward + input grad"),
         "switch relu": ratio("ours: unit switch, relu-only", "bare backward (retained graph)"),
         "new rule": ratio("ours: new guided frame, asked layer", "bare fwd + grad, rule as plain hooks"),
         "switch rule": ratio("ours: unit switch (guided)", "bare backward, rule as plain hooks")}
    if mem is not None:
        print(f"  memory: bare graph {mem[0]:.1f} MiB + recorded outputs {mem[1]:.1f} MiB; "
              f"frame holds {mem[2]:.1f} MiB, extra {round(mem[3], 1) or 0.0:.1f} MiB")
    return r, mem


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--captum", action="store_true", help="add captum's NeuronGuidedBackprop as a row")
    ap.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc untuned (the app tunes it)")
    args = ap.parse_args(argv)
    if not args.system_malloc:
        from cnnvis_gui.core.allocator import reuse_freed_memory
        print(f"malloc: {reuse_freed_memory()}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    clock = "CPU time" if dev.type == "cpu" else "wall time"
    print(f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"ratios on {clock}")
    rows = []
    for name in args.models.split(","):
        rows.append((name,) + bench(name, args, dev, sync))
    print("\nRatios of process CPU time, ours / bare PyTorch (medians of paired rounds):\n"
          "recorded forward / bare forward; new guided frame / bare forward + input gradient; unit switch "
          "(another unit's guided saliency on the same frame) / bare backward.  First figure: the frame records "
          "the asked layer (what the window records); 'every module': Visualizer.forward(x) default.\n"
          "Networks with SiLU/Hardswish: 'relu-only' = the rules at ReLUs only (the plain gradient elsewhere, "
          "the computation every other library does); 'vs rule floor' = the generalized rule against bare "
          "PyTorch running the same rule as plain autograd node hooks.")
    print("| network | recorded forward | new guided frame | unit switch | memory beyond bare graph + recorded |")
    print("|---|---|---|---|---|")
    for name, r, mem in rows:
        extra = f"{round(mem[3], 1) or 0.0:.1f} MiB" if mem is not None else "-"
        new = f"{r['new']:.2f}× (every module {r['new all']:.2f}×"
        sw = f"{r['switch']:.2f}×"
        if r["new relu"] == r["new relu"]:
            new += f"; relu-only {r['new relu']:.2f}×; vs rule floor {r['new rule']:.2f}×"
            sw += f" (relu-only {r['switch relu']:.2f}×; vs rule floor {r['switch rule']:.2f}×)"
        print(f"| {LABELS.get(name, name)} | {r['fwd']:.2f}× (every module {r['fwd all']:.2f}×) | {new}) | {sw} | "
              f"{extra} |")
    print(f"(load average at the end {_load():.1f})")


if __name__ == "__main__":
    main()
