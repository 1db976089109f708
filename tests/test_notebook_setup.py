"""The notebook's first cell, as Colab runs it: a placeholder address stops with one sentence, albumentations
is checked by major version, and running the cell twice or inside a checkout changes nothing."""
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "S11_ResNet18.ipynb"


def setup_cell() -> str:
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    source = "".join(cells[0]["source"])
    assert "REPO_URL" in source, "the first code cell is the set-up cell"
    return "\n".join(line for line in source.splitlines() if not line.startswith("%"))  # no IPython magics


class Runtime:
    """A fresh Colab-like runtime in tmp_path: records git and pip calls, with chosen installed versions."""

    def __init__(self, tmp_path, monkeypatch, versions, package_on_path=False):
        self.calls = []
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))
        monkeypatch.delenv("S11_REPO_URL", raising=False)
        real_find_spec = importlib.util.find_spec

        def find_spec(name, *a):
            if name == "PyTorch_Vision":  # importable once the clone is on sys.path, or inside a checkout
                return real_find_spec(name) if package_on_path or str(tmp_path / "S11_ResNet18") in sys.path \
                    else None
            return real_find_spec(name, *a)

        def version(package):
            if versions.get(package) is None:
                raise importlib.metadata.PackageNotFoundError(package)
            return versions[package]

        def run(cmd, *a, **k):
            self.calls.append(cmd)
            if cmd[:2] == ["git", "clone"]:
                (Path(cmd[-1]) / "PyTorch_Vision").mkdir(parents=True)
            return subprocess.CompletedProcess(cmd, 0)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        monkeypatch.setattr(importlib.metadata, "version", version)
        monkeypatch.setattr(subprocess, "run", run)

    def run_cell(self):
        exec(compile(setup_cell(), str(NOTEBOOK), "exec"), {})


COLAB = {"albumentations": "2.0.8", "torchsummary": "1.5.1"}


def test_placeholder_address_stops_with_one_sentence_saying_what_to_set(tmp_path, monkeypatch):
    runtime = Runtime(tmp_path, monkeypatch, COLAB)
    with pytest.raises(SystemExit) as stop:
        runtime.run_cell()
    message = str(stop.value)
    assert message.startswith("Set REPO_URL in this cell") and "S11_REPO_URL" in message
    assert "\n" not in message and message.endswith("then run it again.")
    assert runtime.calls == [] and not (tmp_path / "S11_ResNet18").exists()


def test_fresh_runtime_clones_once_and_a_second_run_changes_nothing(tmp_path, monkeypatch):
    runtime = Runtime(tmp_path, monkeypatch, COLAB)
    monkeypatch.setenv("S11_REPO_URL", "https://github.com/someone/S11_ResNet18.git")
    runtime.run_cell()
    assert runtime.calls == [["git", "clone", "--depth", "1", "https://github.com/someone/S11_ResNet18.git",
                              "S11_ResNet18"]]
    assert Path.cwd() == tmp_path / "S11_ResNet18" and sys.path[0] == str(tmp_path / "S11_ResNet18")
    runtime.run_cell()
    assert len(runtime.calls) == 1 and Path.cwd() == tmp_path / "S11_ResNet18"
    assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "1"


def test_inside_a_checkout_nothing_is_cloned_or_installed(tmp_path, monkeypatch):
    runtime = Runtime(tmp_path, monkeypatch, COLAB, package_on_path=True)
    runtime.run_cell()  # the placeholder address does not matter here
    assert runtime.calls == [] and Path.cwd() == tmp_path


@pytest.mark.parametrize("versions, installed", [
    ({"albumentations": "1.4.24", "torchsummary": "1.5.1"}, ["albumentations==2.0.8"]),
    ({"albumentations": "2.0.8", "torchsummary": None}, ["torchsummary==1.5.1"]),
    ({"albumentations": None, "torchsummary": None}, ["albumentations==2.0.8", "torchsummary==1.5.1"]),
    ({"albumentations": "2.0.5", "torchsummary": "1.5.1"}, []),
], ids=["albumentations-1.x", "no-torchsummary", "neither", "albumentations-2.x"])
def test_packages_are_installed_by_major_version_not_presence(tmp_path, monkeypatch, versions, installed):
    runtime = Runtime(tmp_path, monkeypatch, versions, package_on_path=True)
    runtime.run_cell()
    pip = [cmd[cmd.index("install") + 2:] for cmd in runtime.calls if "pip" in cmd]
    assert pip == ([installed] if installed else [])


def settings_cell() -> str:
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    source = "".join(cells[1]["source"])
    assert "config_from_env" in source, "the second code cell holds the settings"
    return source


@pytest.mark.parametrize("name, value", [("S11_EPOCHS", "abc"), ("S11_EPOCHS", "-2"), ("S11_MAX_LR", "fast"),
                                         ("S11_PRECISION", "half"), ("S11_FLIP", "maybe")])
def test_bad_environment_overrides_stop_the_settings_cell_in_one_line(monkeypatch, name, value):
    from PyTorch_Vision.config import SettingError

    monkeypatch.setenv(name, value)
    with pytest.raises(SettingError) as e:
        exec(compile(settings_cell(), str(NOTEBOOK), "exec"), {"os": os})
    assert name in str(e.value) and f"got {value}" in str(e.value).replace("'", "") and "\n" not in str(e.value)
    monkeypatch.delenv(name)
    namespace = {"os": os}
    exec(compile(settings_cell(), str(NOTEBOOK), "exec"), namespace)
    assert namespace["config"].epochs >= 1


def test_without_a_gpu_run_all_stops_before_training_with_one_message(image_folder, tmp_path, monkeypatch):
    """The data cell on a CPU: stops with the time it would take here and how to change that, unless TRAIN_ON_CPU."""
    import torch

    from PyTorch_Vision.report import GPUNeeded

    cells = ["".join(c["source"]) for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    data_cell = next(source for source in cells if "stop_without_gpu(" in source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("S11_SMOKE", raising=False)
    monkeypatch.delenv("S11_TRAIN_ON_CPU", raising=False)
    monkeypatch.setenv("S11_DATA_DIR", str(image_folder[0]))
    monkeypatch.setenv("S11_PLOTS_DIR", str(tmp_path / "plots"))
    namespace = {"os": os}
    exec(compile(settings_cell(), str(NOTEBOOK), "exec"), namespace)
    with pytest.raises(GPUNeeded) as e:
        exec(compile(data_cell, str(NOTEBOOK), "exec"), namespace)
    message = e.value._render_traceback_()
    assert len(message) == 1 and message[0].startswith("No GPU in this runtime: training here would take about ")
    assert "Runtime > Change runtime type > T4 GPU" in message[0] and "TRAIN_ON_CPU = True" in message[0]
    monkeypatch.setenv("S11_TRAIN_ON_CPU", "1")
    exec(compile(settings_cell(), str(NOTEBOOK), "exec"), namespace)
    exec(compile(data_cell, str(NOTEBOOK), "exec"), namespace)
    assert (tmp_path / "plots" / "augmented_train.png").exists()
