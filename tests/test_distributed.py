"""One run across processes under torchrun (gloo on the CPU): the same steps as one process, one set of files,
resumable on another number of processes."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddp_fit import run

TESTS = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
LIMIT = 240  # seconds a torchrun call may take before it is killed, with its processes


def torchrun(*args, processes: int = 2, timeout: int = LIMIT) -> subprocess.CompletedProcess:
    """torchrun on this machine's loopback, bounded in time; its process group killed when the time runs out."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}"}
    command = [*TORCHRUN, "--standalone", f"--nproc-per-node={processes}", *map(str, args)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"torchrun ran past {timeout} s:\n{output[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, output)


def fit_in_processes(out: Path, epochs: int, crash_at: int = -1, processes: int = 2) -> dict | None:
    result = out.parent / f"{out.name}-result.pt"
    done = torchrun(TESTS / "ddp_fit.py", out, epochs, crash_at, result, processes=processes)
    if crash_at < 0:
        assert done.returncode == 0, done.stdout[-3000:]
        return torch.load(result, weights_only=True)
    assert done.returncode != 0, "the run was to be killed"
    return None


def assert_same_run(model, history, other):
    for key, value in model.state_dict().items():
        torch.testing.assert_close(other["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert other["history"][key] == pytest.approx(getattr(history, key), rel=1e-4, abs=1e-6), key


def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path):
    """PlainNet has no BatchNorm, so the mean of the two halves' gradients is the whole batch's: the weights
    after 2 epochs (12 steps of 32 images) agree with one process's; the history is written once."""
    model, history = run(None, epochs=2)
    two = fit_in_processes(tmp_path / "two", epochs=2)
    assert_same_run(model, history, two)
    assert two["history"]["run"]["processes"] == 2 and len(two["history"]["epoch"]) == 2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "history.json"]


@pytest.mark.slow
def test_a_run_killed_on_two_processes_resumes_on_one_and_back(tmp_path):
    """Killed in epoch 2 (after 6 steps and 2 test batches of epoch 1, and 2 steps of epoch 2), resumed on the other
    number of processes: the same run as one process uninterrupted."""
    model, history = run(None, epochs=3)
    assert fit_in_processes(tmp_path / "a", epochs=3, crash_at=6 + 2 + 3) is None
    resumed, resumed_history = run(tmp_path / "a", epochs=3)
    assert_same_run(model, history, {"model": resumed.state_dict(), "history": resumed_history.to_dict()})
    assert [s["processes"] for s in resumed_history.run["segments"]] == [2, 1]
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", epochs=3, crash_at=6 + 2 + 3)
    assert_same_run(model, history, fit_in_processes(tmp_path / "b", epochs=3))


def test_a_batch_that_the_processes_cannot_split_is_refused_in_one_line(tmp_path):
    done = torchrun("-m", "PyTorch_Vision", "train", "--device", "cpu", "--batch-size", "32", "--data-dir",
                    tmp_path / "none", "--out", tmp_path / "out", processes=3)
    assert done.returncode != 0
    line = "error: batch_size 32 cannot be split evenly over 3 processes: choose a batch size that leaves every " \
           "batch a multiple of 3 images"
    assert done.stdout.count(line) == 1, done.stdout[-3000:]
    assert "PyTorch_Vision/" not in done.stdout, "no traceback of ours"
    assert not (tmp_path / "out").exists()


def test_sync_batchnorm_is_refused_on_the_cpu_in_one_line(image_folder, tmp_path):
    root, _ = image_folder
    done = torchrun("-m", "PyTorch_Vision", "train", "--device", "cpu", "--data-dir", root, "--batch-size", "20",
                    "--sync-batchnorm", "--out", tmp_path / "out")
    line = "error: sync_batchnorm needs CUDA GPUs (NCCL): torch's SyncBatchNorm does not run on the CPU; train " \
           "without it"
    assert done.returncode != 0 and done.stdout.count(line) == 1, done.stdout[-3000:]
    assert "PyTorch_Vision/" not in done.stdout, "no traceback of ours"


def per_epoch(history: dict) -> dict:
    return {k: history[k] for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")}


@pytest.mark.slow
def test_resnet18_on_two_processes_or_two_nodes_is_one_run_and_the_same_each_time(tmp_path):
    """The command line's ResNet18 on 2 processes: every line once, one run folder, the same history from the same
    command; two torchrun "nodes" of one process each, meeting on 127.0.0.1, train the same run."""
    import json
    import socket

    from conftest import write_image_folder
    from PyTorch_Vision.data import synthetic_cifar10

    data = synthetic_cifar10(n_train=256, n_test=64, seed=1)
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        write_image_folder(tmp_path / "data", images, labels, data.classes, split)
    args = ["-m", "PyTorch_Vision", "train", "--device", "cpu", "--data-dir", tmp_path / "data", "--epochs", "3",
            "--batch-size", "32", "--max-lr", "0.05", "--min-warmup-steps", "1", "--progress", "epoch"]
    first, again = (torchrun(*args, "--out", tmp_path / name) for name in ("first", "again"))
    assert first.returncode == 0 and again.returncode == 0, first.stdout[-3000:] + again.stdout[-3000:]
    histories = [json.loads((tmp_path / name / "history.json").read_text()) for name in ("first", "again")]
    assert per_epoch(histories[0]) == per_epoch(histories[1])
    assert histories[0]["run"]["processes"] == 2
    assert histories[0]["train_acc"][-1] > 30, "it learns (10% is chance)"
    assert first.stdout.count("epoch  3/3") == 1 and first.stdout.count("Total params") == 1
    assert "; trained by up to 2 processes (torchrun) |" in first.stdout, "the headline says how it trained"
    assert {"checkpoint.pt", "history.json", "loss_accuracy.png"} <= {p.name for p in (tmp_path / "first").iterdir()}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{TESTS}"}
    nodes = [subprocess.Popen([*TORCHRUN, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=s11-test", *map(str, args), "--out",
                               tmp_path / "nodes"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, start_new_session=True) for _ in range(2)]
    try:
        outputs = [node.communicate(timeout=LIMIT)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    nodes_history = json.loads((tmp_path / "nodes" / "history.json").read_text())
    assert per_epoch(nodes_history) == per_epoch(histories[0]) and nodes_history["run"]["processes"] == 2
