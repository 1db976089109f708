import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from PyTorch_Vision.__main__ import main
from PyTorch_Vision.data import synthetic_cifar10

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "PyTorch_Vision", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.mark.slow
def test_train_end_to_end_writes_history_checkpoint_and_figures(image_folder, tmp_path):
    root, _ = image_folder
    out = tmp_path / "run"
    result = run_cli("train", "--data-dir", root, "--epochs", 1, "--batch-size", 16, "--out", out,
                     "--progress", "epoch", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "Total params: 11,173,962" in result.stdout and "final test accuracy" in result.stdout
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1] and f"| final test accuracy (epoch 1) | **{history['test_acc'][0]:.2f}%** |" \
        in result.stdout, "the printed summary is the saved history's"
    for name in ("checkpoint.pt", "loss_accuracy.png", "misclassified.png", "misclassified_gradcam.png",
                 "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0, name

    before = (out / "checkpoint.pt").read_bytes()
    again = run_cli("train", "--data-dir", root, "--epochs", 1, "--batch-size", 16, "--out", out)
    assert again.returncode == 1 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
    assert (out / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["--data-dir", "{tmp}/missing", "--epochs", "1"], "could not download"),
    (["--data-dir", "{tmp}", "--epochs", "1"], "could not download"),
    (["--epochs", "0"], "argument --epochs: must be a positive whole number, got '0'"),
    (["--batch-size", "-4"], "argument --batch-size: must be a positive whole number, got '-4'"),
    (["--max-lr", "0"], "argument --max-lr: must be a positive number, got '0'"),
    (["--max-lr", "fast"], "argument --max-lr: must be a positive number, got 'fast'"),
    (["--limit-test", "0"], "argument --limit-test: must be a positive whole number, got '0'"),
    (["--resume", "--out", "{tmp}/empty"], "no checkpoint"),
    (["--precision", "half"], "argument --precision: must be one of auto, bf16, fp16, fp32, got 'half'"),
    (["--device", "tpu9"], "unknown device 'tpu9': use cpu, cuda, cuda:N or mps"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--epochs", "abc"], "must be a positive whole number, got 'abc'"),
    (["--out", "{tmp}/a_file"], "is a file, not a folder"),
])
def test_bad_input_gives_one_clear_error(args, message, tmp_path, capsys, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    (tmp_path / "a_file").write_text("not a folder")
    argv = ["train"] + [a.format(tmp=tmp_path) for a in args]
    if "--out" not in args:
        argv += ["--out", str(tmp_path / "out")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own usage errors exit 2
        code = e.code
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_recipe_options_reach_the_training_config(monkeypatch, tmp_path):
    import PyTorch_Vision.__main__ as cli

    def stop(model, data, config, **kwargs):
        raise ValueError(f"stopped with {config}")

    monkeypatch.setattr(cli, "load_cifar10", lambda *a, **k: synthetic_cifar10())
    monkeypatch.setattr(cli, "fit", stop)
    with pytest.raises(ValueError) as e:
        cli.train(cli.build_parser().parse_args([
            "train", "--out", str(tmp_path / "o"), "--weight-decay", "1e-4", "--label-smoothing", "0",
            "--no-flip", "--precision", "fp16", "--cutout-p", "0.25", "--pct-start", "0.2",
            "--anneal", "linear", "--min-warmup-steps", "50", "--bn-stats-images", "0", "--on-device-data", "0"]))
    assert "weight_decay=0.0001, label_smoothing=0" in str(e.value) and "precision='fp16'" in str(e.value)
    assert "flip=False, cutout_p=0.25, bn_stats_images=0" in str(e.value)
    assert "pct_start=0.2, anneal='linear'" in str(e.value) and "min_warmup_steps=50" in str(e.value)
    assert "on_device_data=False" in str(e.value)


def test_results_prints_a_history_as_markdown(tmp_path, capsys):
    from PyTorch_Vision.history import History, results_markdown

    h = History()
    h.append(epoch=1, train_loss=2.0, train_acc=20.0, test_loss=1.9, test_acc=25.0, lr=0.1, epoch_seconds=3.5)
    h.save(tmp_path / "history.json")
    assert main(["results", str(tmp_path / "history.json")]) == 0
    out = capsys.readouterr().out
    assert out.strip() == results_markdown(h) and "**25.00%**" in out and "| 1 | 2.0000 | 20.00 |" in out
    assert main(["results", str(tmp_path / "history.json"), "--headline"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == results_markdown(h, epochs=False) and "**25.00%**" in out and "| 1 | 2.0000" not in out
    assert main(["results", str(tmp_path / "absent.json")]) == 1
    assert "no history at" in capsys.readouterr().err


def test_every_setting_is_an_option_with_the_configs_default():
    from dataclasses import fields

    from PyTorch_Vision.__main__ import build_parser
    from PyTorch_Vision.config import TrainConfig, config_from_args

    assert config_from_args(build_parser().parse_args(["train"])) == TrainConfig()
    switched_off = [f"--no-{f.name.replace('_', '-')}" for f in fields(TrainConfig) if f.default is True]
    changed = config_from_args(build_parser().parse_args(["train"] + switched_off))
    assert [f.name for f in fields(TrainConfig) if getattr(changed, f.name) is False and f.default is True] == \
        ["flip", "channels_last"]
    args = build_parser().parse_args(["train"])
    assert (args.data_dir, args.out, args.device, args.resume, args.progress) == ("data", "runs/resnet18", None,
                                                                                 False, "bar")


@pytest.mark.parametrize("listing", ["sweep.txt", "recipe_sweep.txt"])
def test_every_line_of_the_benchmark_lists_is_a_valid_run(listing):
    """benchmarks/gpu.sh passes each line's options to `train`: a misspelt one would only fail on the GPU."""
    from PyTorch_Vision.__main__ import build_parser
    from PyTorch_Vision.config import config_from_args

    lines = (Path(__file__).resolve().parents[1] / "benchmarks" / listing).read_text().splitlines()
    names = [line.split()[0] for line in lines]
    assert len(set(names)) == len(names) > 0
    for line in lines:
        config = config_from_args(build_parser().parse_args(["train"] + line.split()[1:]))
        assert config.epochs == 20, line
