"""The thread policy under load and without: torch threads x OpenMP's wait policy, measured.

Each case runs in a fresh process (OpenMP reads its wait policy once, when torch loads it) and
repeats one unit of work for ``--seconds``; the table gives the median milliseconds per unit and
its ratio to *1 thread* measured in the same condition and round (median over the rounds).
Two conditions:

* *as is*  -- the machine as it is (on this project's shared 2-core machine other jobs run: read
  the load average printed with the table);
* *loaded* -- plus ``--load`` x cores busy processes (pure-Python spin loops) started by this
  script at the benchmark's own nice level, so they compete with it as equals.

Policies:

* ``1 thread``            -- ``--threads 1``;
* ``N threads, spinning`` -- the physical cores, OpenMP's own wait policy (its threads spin
  between parallel regions; ``CNNVIS_OPENMP_WAIT=default``): the command line's default before;
* ``N threads, sleeping`` -- the physical cores, ``OMP_WAIT_POLICY=PASSIVE`` (what importing
  ``cnnvis_gui`` now sets before torch loads OpenMP): the command line's default now.

Workloads (the units of work of the slow commands):

* ``export``   -- torchvision MobileNetV2 (random init), 1x3x224x224: a recorded forward and one
  guided-backprop saliency map (what ``cnnvis export`` does per image and method);
* ``optimize`` -- the ``shapes`` demo, 1x3x64x64: a forward and the input gradient of a unit (one
  step of ``cnnvis optimize``: many small parallel regions, where waiting costs most).

    python benchmarks/bench_threads.py [--workloads export,optimize] [--rounds 3] [--seconds 8]
        [--load 2] [--conditions as-is,loaded]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load():
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


def _physical():
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("CNNVIS_OPENMP_WAIT", "default")   # the parent never loads torch anyway
    from cnnvis_gui.core.threads import physical_cores       # noqa: E402 - imports torch (cores only)
    return physical_cores()


# ------------------------------------------------------------------------------ the child
def child(workload: str, threads: int, seconds: float) -> None:
    import cnnvis_gui  # noqa: F401 - before torch: sets OMP_WAIT_POLICY unless told not to
    import torch
    from cnnvis_gui.core.threads import apply_threads

    apply_threads(threads)
    torch.manual_seed(0)
    if workload == "export":
        import torchvision
        from cnnvis_gui.core import Visualizer
        vis = Visualizer(torchvision.models.mobilenet_v2().eval())
        x = torch.randn(1, 3, 224, 224)

        def step():
            with vis.forward(x, layers=[""]) as f:
                f.saliency("", 3, "guided")
    else:
        from cnnvis_gui.models import demo
        model = demo("shapes").model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x = torch.rand(1, 3, 64, 64)

        def step():
            xi = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xi)[0, 3], xi)
            x.add_(g.sign(), alpha=1e-3)

    step()                                   # warm-up
    times, c0 = [], time.process_time()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 2:
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1000.0)
    cpu = (time.process_time() - c0) * 1000.0 / len(times)
    print(json.dumps({"ms": statistics.median(times), "n": len(times), "cpu_ms": cpu,
                      "wait": os.environ.get("OMP_WAIT_POLICY", "OpenMP default"),
                      "threads": torch.get_num_threads()}))


# ------------------------------------------------------------------------------ the parent
def _spinner():
    x = 0
    while True:
        x += 1


def _run(workload, threads, passive, seconds):
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    env["CNNVIS_OPENMP_WAIT"] = "passive" if passive else "default"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, __file__, "--child", workload, "--threads", str(threads),
                        "--seconds", str(seconds)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default="export,optimize")
    ap.add_argument("--conditions", default="as-is,loaded")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--load", type=float, default=2.0, help="busy processes per core in the 'loaded' condition")
    ap.add_argument("--child")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.threads, a.seconds)

    import multiprocessing as mp
    cores = _physical()
    policies = [("1 thread", 1, True), (f"{cores} threads, spinning", cores, False),
                (f"{cores} threads, sleeping", cores, True)]
    workloads = a.workloads.split(",")
    rows = []
    for cond in a.conditions.split(","):
        procs = []
        if cond == "loaded":
            procs = [mp.Process(target=_spinner, daemon=True) for _ in range(max(1, round(a.load * cores)))]
            for p in procs:
                p.start()
            time.sleep(2.0)
        load0 = _load()
        try:
            res = {(w, p[0]): [] for w in workloads for p in policies}
            for rnd in range(a.rounds):
                order = [(w, p) for w in workloads for p in policies]
                random.Random(rnd).shuffle(order)
                for w, (name, n, passive) in order:
                    res[(w, name)].append(_run(w, n, passive, a.seconds))
                    print(f"  {cond} round {rnd + 1}: {w:8s} {name:22s} {res[(w, name)][-1]['ms']:9.1f} ms",
                          file=sys.stderr, flush=True)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.join()
        load1 = _load()
        for w in workloads:
            base = res[(w, policies[0][0])]
            for name, n, passive in policies:
                runs = res[(w, name)]
                ratio = statistics.median(b["ms"] / r["ms"] for b, r in zip(base, runs))
                rows.append((cond, f"{load0:.1f}-{load1:.1f}", w, name, statistics.median(r["ms"] for r in runs),
                             statistics.median(r["cpu_ms"] for r in runs), ratio))
    print(f"thread policy benchmark: {cores} physical cores, {os.cpu_count()} CPUs, {a.rounds} rounds of "
          f"{a.seconds:.0f} s per case, load generator {a.load:g} x cores")
    print(f"{'condition':10s} {'load avg':>10s} {'workload':9s} {'policy':24s} {'ms/unit':>9s} "
          f"{'CPU ms':>8s} {'speed vs 1 thread':>18s}")
    for cond, load, w, name, ms, cpu, ratio in rows:
        print(f"{cond:10s} {load:>10s} {w:9s} {name:24s} {ms:9.1f} {cpu:8.1f} {ratio:17.2f}x")


if __name__ == "__main__":
    main()
