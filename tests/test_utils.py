import builtins

import pytest

import torch

from PyTorch_Vision.utils import denormalize, device_name, usable_cores


def test_device_name_names_the_cpu_model_and_cores(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\n")
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: real_open(cpuinfo if f == "/proc/cpuinfo" else f, *a, **k))
    assert device_name("cpu") == f"CPU: AMD EPYC 7B12 ({usable_cores()} cores, {torch.get_num_threads()} torch threads)"

    def no_cpuinfo(f, *a, **k):
        if f == "/proc/cpuinfo":
            raise FileNotFoundError(f)
        return real_open(f, *a, **k)
    monkeypatch.setattr(builtins, "open", no_cpuinfo)
    monkeypatch.setattr("platform.processor", lambda: "")
    assert device_name("cpu").startswith("CPU (")


def test_denormalize_inverts_and_does_not_mutate():
    x = torch.rand(2, 3, 4, 4)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    normalized = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    copy = normalized.clone()
    torch.testing.assert_close(denormalize(normalized, mean, std), x)
    assert torch.equal(normalized, copy)


def test_code_version_names_the_commit_and_marks_local_changes(monkeypatch, tmp_path):
    import shutil
    import subprocess

    import PyTorch_Vision.utils as utils_module
    from PyTorch_Vision.utils import code_version

    if shutil.which("git") is None:
        pytest.skip("needs git")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    assert code_version(tmp_path) == "unknown", "a repository without a commit"
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run(git + ["add", "a.py"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "one"], check=True)
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert code_version(tmp_path) == head
    (tmp_path / "b.py").write_text("untracked files do not count\n")
    assert code_version(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) == head + " with local changes"

    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(utils_module.subprocess, "run", no_git)
    assert code_version(tmp_path) == "unknown"
