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
