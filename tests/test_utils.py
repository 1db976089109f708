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


def test_progress_bar_is_a_widget_in_a_notebook_with_ipywidgets_and_text_elsewhere(monkeypatch):
    import warnings

    import tqdm.notebook
    import tqdm.std

    import PyTorch_Vision.utils as utils_module
    from PyTorch_Vision.utils import progress_bar

    bar = progress_bar(3, "outside")
    assert type(bar) is tqdm.std.tqdm
    bar.close()
    monkeypatch.setattr(utils_module, "in_notebook", lambda: True)
    pytest.importorskip("ipywidgets")
    bar = progress_bar(3, "widgets")
    assert isinstance(bar, tqdm.notebook.tqdm)
    bar.close()
    real_find_spec = utils_module.importlib.util.find_spec
    monkeypatch.setattr(utils_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "ipywidgets" else real_find_spec(name, *a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "IProgress not found" warning, red in a notebook
        bar = progress_bar(3, "no widgets")
    assert type(bar) is tqdm.std.tqdm
    bar.close()


def test_in_notebook_recognises_jupyter_and_colab_kernels(monkeypatch):
    import sys
    import types

    from PyTorch_Vision.utils import in_notebook

    class ZMQInteractiveShell:
        pass

    class ColabShell(ZMQInteractiveShell):
        pass

    class TerminalInteractiveShell:
        pass

    for shell, expected in [(ColabShell(), True), (ZMQInteractiveShell(), True), (TerminalInteractiveShell(), False),
                            (None, False)]:
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda s=shell: s))
        assert in_notebook() is expected
    monkeypatch.delitem(sys.modules, "IPython")
    assert in_notebook() is False


def test_code_version_names_the_commit(monkeypatch):
    import subprocess

    import PyTorch_Vision.utils as utils_module
    from PyTorch_Vision.utils import code_version

    monkeypatch.setenv("S11_COMMIT", "abc1234")
    assert code_version() == "abc1234"
    monkeypatch.delenv("S11_COMMIT")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert code_version().startswith(head.stdout.strip())

    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(utils_module.subprocess, "run", no_git)
    assert code_version() == "unknown"
