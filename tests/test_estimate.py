"""The run-time estimate the notebook shows on a machine without a GPU, and its stop before training there."""
import pytest
import torch

import PyTorch_Vision.report as estimate_module
from conftest import TinyNet
from PyTorch_Vision.config import TrainConfig
from PyTorch_Vision.report import GPUNeeded, RunEstimate, estimate_run, images_per_second, stop_without_gpu


def test_images_per_second_times_only_the_calls_after_warm_up(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(estimate_module.time, "perf_counter", lambda: clock[0])

    def fn(x, y):  # each call takes 1 s of the fake clock; warm-up calls 10 s
        clock[0] += 10.0 if len(y) == 7 else 1.0

    batches = [(None, [0] * 7)] * 2 + [(None, [0] * 4)] * 3
    rate, warm = images_per_second(fn, batches, steps=3, warmup=2)
    assert (rate, warm) == (4.0, 20.0)
    with pytest.raises(ValueError, match="no batch left"):
        images_per_second(fn, batches[:2], steps=3, warmup=2)


def test_estimate_adds_training_and_evaluation_time():
    e = RunEstimate(train_images_per_s=10.0, eval_images_per_s=50.0, n_train=1000, n_test=500, epochs=20)
    assert e.epoch_seconds == 110.0 and e.total_seconds == 2200.0
    assert RunEstimate(10.0, 50.0, 1000, 500, 20, n_bn_stats=250).epoch_seconds == 115.0
    assert str(e).startswith("about 37 min for 20 epochs (2 min per epoch; measured here: 10 img/s training")
    assert str(RunEstimate(1.0, 1.0, 8000, 400, 1)).startswith("about 2.3 h for 1 epoch (")


def test_estimate_run_measures_without_touching_the_model_or_the_rng(tiny_data):
    torch.manual_seed(0)
    model = TinyNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    e = estimate_run(model, tiny_data, TrainConfig(epochs=20), "cpu", batch_size=16, steps=2)
    assert e.train_images_per_s > 0 and e.eval_images_per_s > 0
    assert (e.n_train, e.n_test, e.epochs, e.n_bn_stats) == (192, 64, 20, 192)  # all 192 for BatchNorm's statistics
    assert e.total_seconds == pytest.approx(20 * (192 / e.train_images_per_s + (64 + 192) / e.eval_images_per_s))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training
    assert torch.equal(rng, torch.get_rng_state())
    with pytest.raises(ValueError, match="smaller batch_size"):
        estimate_run(model, tiny_data, TrainConfig(), "cpu", batch_size=32, steps=2)  # 64 test images < 3 x 32


def test_without_a_gpu_training_stops_with_one_message_unless_asked_for():
    estimate = RunEstimate(train_images_per_s=100.0, eval_images_per_s=400.0, n_train=50_000, n_test=10_000, epochs=20)
    with pytest.raises(GPUNeeded) as e:
        stop_without_gpu("cpu", estimate)
    message = str(e.value)
    assert message.startswith(f"No GPU in this runtime: training here would take {estimate}.")
    assert "Runtime > Change runtime type > T4 GPU" in message and "TRAIN_ON_CPU = True" in message
    assert e.value._render_traceback_() == [message], "the notebook shows the message alone"
    stop_without_gpu("cpu", estimate, train_on_cpu=True)
    stop_without_gpu("cuda", estimate)
    stop_without_gpu("mps", estimate)
