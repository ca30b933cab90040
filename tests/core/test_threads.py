"""The torch thread policy: the user's choice wins, else physical cores minus what the window keeps."""
from __future__ import annotations

import torch

from cnnvis_gui.core import threads


def test_choice_order_and_reserve(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    assert threads.choose_threads(3, reserve=1, env={"OMP_NUM_THREADS": "2"}) == threads.ThreadPolicy(3, "--threads")
    assert threads.choose_threads(None, reserve=1, env={"OMP_NUM_THREADS": "2"}).threads == 2
    p = threads.choose_threads(None, reserve=1, env={})
    assert p.threads == 3 and "kept for the window" in p.reason
    assert threads.choose_threads(0, reserve=0, env={"OMP_NUM_THREADS": "x"}).threads == 4
    monkeypatch.setattr(threads, "physical_cores", lambda: 1)
    assert threads.choose_threads(None, reserve=1, env={}).threads == 1     # torch always keeps one


def test_physical_cores_counts_no_more_than_the_cpus_allowed():
    n = threads.physical_cores()
    assert 1 <= n <= len(threads._allowed_cpus())


def test_apply_sets_torch_and_is_reported(monkeypatch):
    before = torch.get_num_threads()
    try:
        p = threads.apply_threads(1)
        assert torch.get_num_threads() == 1 and threads.current_policy() == p
        torch.set_num_threads(2)                       # changed behind the policy's back: say what torch has
        assert threads.current_policy().threads == 2
    finally:
        torch.set_num_threads(before)


def test_a_thread_can_lower_only_itself():
    import os
    import threading
    if not hasattr(os, "getpriority"):
        return
    seen = {}

    def work():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        seen["ok"] = threads.lower_this_thread(2)
        seen["delta"] = os.getpriority(os.PRIO_PROCESS, tid) - before
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["ok"] and seen["delta"] == 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
    assert threads.lower_this_thread(0) is False


def _topology(root, cpus):
    """A fake /sys/devices/system/cpu: {cpu: (package, core)}."""
    for c, (pkg, core) in cpus.items():
        d = root / f"cpu{c}" / "topology"
        d.mkdir(parents=True)
        (d / "core_id").write_text(f"{core}\n")
        (d / "physical_package_id").write_text(f"{pkg}\n")
    return str(root)


def test_physical_cores_count_hyperthreads_once_per_package(tmp_path, monkeypatch):
    root = _topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1), 4: (1, 0), 5: (1, 0)})
    for allowed, cores in [({0, 1, 2, 3}, 2), ({0, 2}, 1), ({0, 1, 2, 3, 4, 5}, 3), ({4, 5}, 1), ({1, 4}, 2)]:
        monkeypatch.setattr(threads, "_allowed_cpus", lambda allowed=allowed: set(allowed))
        assert threads.physical_cores(root) == cores, allowed
    monkeypatch.setattr(threads, "_allowed_cpus", lambda: {0, 1, 6})         # cpu6 has no topology
    assert threads.physical_cores(root) == 3
    monkeypatch.setattr(threads, "_allowed_cpus", lambda: {6})
    assert threads.physical_cores(root) == 1
    monkeypatch.setattr(threads, "_allowed_cpus", lambda: set())
    assert threads.physical_cores(root) == 1


def test_allowed_cpus_without_affinity(monkeypatch):
    import os

    def refuse(pid):
        assert pid == 0                  # this process
        raise OSError("no affinity here")
    monkeypatch.setattr(os, "sched_getaffinity", refuse)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert threads._allowed_cpus() == {0, 1, 2}
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert threads._allowed_cpus() == {0}


def test_allowed_cpus_are_this_process_affinity(monkeypatch):
    import os
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 3} if pid == 0 else {0})
    assert threads._allowed_cpus() == {1, 3}


def test_every_reason_in_words(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", " 3 ")
    assert threads.choose_threads() == threads.ThreadPolicy(3, "OMP_NUM_THREADS")          # os.environ by default
    assert threads.choose_threads(None, env={"OMP_NUM_THREADS": "1"}) == threads.ThreadPolicy(1, "OMP_NUM_THREADS")
    assert threads.choose_threads(None, env={"OMP_NUM_THREADS": "0"}) == threads.ThreadPolicy(4, "4 physical cores")
    assert threads.choose_threads(None, env={}) == threads.ThreadPolicy(4, "4 physical cores")   # no reserve by default
    assert threads.choose_threads(None, 1, {}) == threads.ThreadPolicy(3, "4 physical cores, 1 kept for the window")
    assert threads.choose_threads(None, 9, {}) == threads.ThreadPolicy(1, "4 physical cores, 3 kept for the window")
    monkeypatch.setattr(threads, "physical_cores", lambda: 1)
    assert threads.choose_threads(None, 1, {}) == threads.ThreadPolicy(1, "1 physical core")
    assert threads.ThreadPolicy(1, "--threads").describe() == "1 torch thread (--threads)"
    assert threads.ThreadPolicy(3, "x").describe() == "3 torch threads (x)"


def test_apply_uses_the_reserve_and_unknown_policies_are_torchs(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert threads.apply_threads() == threads.ThreadPolicy(4, "4 physical cores")
        assert threads.apply_threads(None, 2) == threads.ThreadPolicy(2, "4 physical cores, 2 kept for the window")
        monkeypatch.setattr(threads, "_applied", None)
        assert threads.current_policy() == threads.ThreadPolicy(torch.get_num_threads(), "torch default")
    finally:
        torch.set_num_threads(before)


def test_lowering_one_level_and_a_refusal(monkeypatch):
    import os
    import threading
    if not hasattr(os, "setpriority"):
        return
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("one", threads.lower_this_thread(1)))
    t.start()
    t.join()
    assert out["one"] is True

    def refuse(*a):
        raise OSError("not allowed")
    monkeypatch.setattr(os, "setpriority", refuse)
    assert threads.lower_this_thread(2) is False


def test_physical_cores_reads_linuxs_topology_by_default(monkeypatch):
    import builtins
    opened, real_open = [], builtins.open

    def recording(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", recording)
    threads.physical_cores()
    import os
    wanted = {f"/sys/devices/system/cpu/cpu{c}/topology/{f}" for c in threads._allowed_cpus()
              for f in ("core_id", "physical_package_id")}
    assert set(opened) <= wanted
    assert opened or not any(os.path.exists(p) for p in wanted)          # read when Linux has it
