"""Faults a real run meets: a full disk or a read-only folder while writing, an interrupt, a loss that turns NaN,
images that cannot be normalized, bad notebook settings. Each ends in a clear message and loses nothing on disk."""
import errno
import os

import numpy as np
import pytest
import torch

import PyTorch_Vision.utils as files_module
from conftest import CrashAfter, TinyNet
from PyTorch_Vision.config import SettingError, TrainConfig, config_from_env
from PyTorch_Vision.data import DataError, make_data
from PyTorch_Vision.history import HISTORY_KEYS, History
from PyTorch_Vision.train import fit, load_checkpoint
from PyTorch_Vision.utils import OutputError, atomic_write

# 192 train images: 6 batches an epoch; TinyNet needs no long warm-up
CONFIG = TrainConfig(epochs=3, batch_size=32, max_lr=0.05, seed=0, min_warmup_steps=1,
                     precision="fp32")  # runs compared bit for bit: not a precision timed afresh each time


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return TinyNet()


def test_a_full_disk_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_write(path, b"the good one")
    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(files_module, "open", lambda p, mode: FullDisk(real_open(p, mode)), raising=False)
    with pytest.raises(OutputError) as e:
        atomic_write(path, b"x" * 1000)
    assert e.value.errno == errno.ENOSPC and "No space left on device" in e.value.strerror
    assert "the previous checkpoint.pt there is intact" in e.value.strerror
    assert path.read_bytes() == b"the good one" and not (tmp_path / "checkpoint.pt.tmp").exists()


def test_disk_full_during_a_run_stops_with_the_last_checkpoint_intact(tiny_data, tmp_path, monkeypatch):
    writes = []
    real_replace = os.replace

    def replace_until_full(src, dst):
        writes.append(dst)
        if str(dst).endswith("checkpoint.pt") and len([w for w in writes if str(w).endswith("checkpoint.pt")]) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(files_module.os, "replace", replace_until_full)
    with pytest.raises(OutputError, match="checkpoint.pt .*No space left on device.*previous checkpoint.pt there is "
                                          "intact"):
        fit(tiny_model(), tiny_data, CONFIG, device="cpu", out_dir=tmp_path, progress="none")
    assert load_checkpoint(tmp_path / "checkpoint.pt")["history"]["epoch"] == [1]
    assert History.load(tmp_path / "history.json").epoch == [1]


def test_a_read_only_output_folder_is_found_before_training(tiny_data, tmp_path, monkeypatch):
    """As root (CI) permission bits do not stop writes, so the refusal is simulated where the write happens."""
    def read_only(path, mode="r", *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(files_module, "open", read_only, raising=False)
    model = tiny_model()
    with pytest.raises(OutputError, match="Permission denied.*choose a folder you can write to"):
        fit(model, tiny_data, CONFIG, device="cpu", out_dir=tmp_path / "run", progress="none")
    assert model.linear.weight.grad is None, "refused before any training step"


def test_an_interrupt_keeps_the_last_epochs_checkpoint_and_resumes_to_the_same_run(tiny_data, tmp_path):
    """Ctrl-C (or a notebook's interrupt) is a KeyboardInterrupt raised wherever training is: CrashAfter raises it."""
    straight = fit(tiny_model(), tiny_data, CONFIG, device="cpu", progress="none")
    # an epoch: 6 steps, 6 batches again for BatchNorm's statistics, 2 evaluation batches
    interrupted = CrashAfter(tiny_model(), n=(6 + 6 + 2) + 4)  # during the 4th batch of epoch 2
    with pytest.raises(KeyboardInterrupt, match=r"stopped in epoch 2; the checkpoint of epoch 1 is kept in .*: "
                                                r"resume with --resume"):
        fit(interrupted, tiny_data, CONFIG, device="cpu", out_dir=tmp_path, progress="none")
    assert load_checkpoint(tmp_path / "checkpoint.pt")["history"]["epoch"] == [1]
    resumed = fit(interrupted, tiny_data, CONFIG, device="cpu", out_dir=tmp_path, resume=True, progress="none")
    for key in HISTORY_KEYS[:-1]:
        assert getattr(resumed, key) == pytest.approx(getattr(straight, key), rel=1e-6, abs=1e-7), key
    with pytest.raises(KeyboardInterrupt, match="^stopped in epoch 1; no checkpoint was written$"):
        fit(CrashAfter(tiny_model(), n=3), tiny_data, CONFIG, device="cpu", progress="none")


def test_a_nan_loss_stops_the_run_at_the_next_check_keeping_the_last_epoch(tiny_data, tmp_path):
    class NaNFrom(CrashAfter):
        def forward(self, x):
            self.calls += 1
            out = self.model(x)
            return out * float("nan") if self.calls >= self.n else out

    model = NaNFrom(tiny_model(), n=(6 + 6 + 2) + 2)  # 2nd batch of epoch 2; the sums are read after the 6th
    with pytest.raises(FloatingPointError, match=r"became nan by batch 6/6 in epoch 2 \(fp32\); the checkpoint of "
                                                 r"epoch 1 is kept in .*Lower max_lr"):
        fit(model, tiny_data, CONFIG, device="cpu", out_dir=tmp_path, progress="none")
    assert model.calls == (6 + 6 + 2) + 6, "no evaluation after the epoch that diverged"
    assert load_checkpoint(tmp_path / "checkpoint.pt")["history"]["epoch"] == [1]


def test_images_without_variation_are_refused_with_what_is_wrong_with_them():
    flat = np.full((10, 32, 32, 3), 128, np.uint8)
    flat[:, :, :, 0] = np.arange(10)[:, None, None]  # red varies, green and blue do not
    with pytest.raises(DataError, match="do not vary at all in channel G/B .*check that the folder holds real images"):
        make_data(flat, np.zeros(10, np.int64), flat, np.zeros(10, np.int64), ["a"], "a folder")
    with pytest.raises(DataError, match="0 training and 10 test images"):
        make_data(flat[:0], np.zeros(0, np.int64), flat, np.zeros(10, np.int64), ["a"], "a folder")


@pytest.mark.parametrize("value, message", [("abc", "S11_EPOCHS must be a positive whole number, got 'abc'"),
                                            ("-3", "S11_EPOCHS must be a positive whole number, got '-3'"),
                                            ("0", "S11_EPOCHS must be a positive whole number, got '0'")])
def test_notebook_settings_are_checked_like_the_command_line(monkeypatch, value, message):
    monkeypatch.setenv("S11_EPOCHS", value)
    with pytest.raises(SettingError, match=message) as e:
        config_from_env(TrainConfig())
    assert e.value._render_traceback_() == [f"SettingError: {e.value}"], "one line in a notebook, no traceback"
    monkeypatch.setenv("S11_EPOCHS", "7")
    assert config_from_env(TrainConfig()).epochs == 7
    monkeypatch.delenv("S11_EPOCHS")
    assert config_from_env(TrainConfig()) == TrainConfig()
    monkeypatch.setenv("S11_FLIP", "maybe")
    with pytest.raises(SettingError, match="S11_FLIP must be 1 or 0"):
        config_from_env(TrainConfig())
