"""``--threads`` on the command line: applied, reported by ``cnnvis info``, range-checked."""
from __future__ import annotations

import torch

from cnnvis_gui import cli


def test_cnnvis_info_reports_threads(capsys):
    before = torch.get_num_threads()
    try:
        assert cli.main(["info", "--model", "shapes", "--threads", "1"]) == 0
        assert "threads: 1 torch thread (--threads)" in capsys.readouterr().out
        assert cli.main(["info", "--model", "shapes", "--threads", "0"]) == cli.EXIT_USAGE
        assert "--threads must be at least 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
