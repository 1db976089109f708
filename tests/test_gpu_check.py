"""benchmarks/gpu_check.py as far as a machine without a GPU can run it: its arguments and its skip."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_check  # noqa: E402


def test_both_folders_are_required(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--data-dir", "data"])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err


def test_a_data_dir_that_is_no_folder_is_refused_first(tmp_path, capsys):
    assert gpu_check.main(["--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 1
    assert "is not a folder" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_without_a_gpu_it_says_so_in_one_line_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ran = []
    monkeypatch.setattr(gpu_check, "check_precision", lambda: ran.append("precision"))
    assert gpu_check.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "no CUDA GPU here (torch.cuda.is_available() is False): this check is for a GPU; nothing was run"]
    assert ran == [] and not (tmp_path / "out").exists()
