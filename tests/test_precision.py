"""Mixed precision by hardware, and fp16 training with GradScaler: skipped steps neither stop the run nor
poison the epoch's figures."""
import math
import warnings
from dataclasses import replace

import pytest
import torch
from torch import nn

import PyTorch_Vision.utils as precision_module
from conftest import TinyNet
from PyTorch_Vision.config import TrainConfig
from PyTorch_Vision.train import Trainer, fit, make_optimizer
from PyTorch_Vision.utils import choose_precision

CONFIG = TrainConfig(epochs=2, batch_size=16, max_lr=0.05, seed=0, precision="fp16", min_warmup_steps=1)


def gpu_of_capability(monkeypatch, major, minor):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (major, minor))


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16"), ((6, 0), "fp32")],
                         ids=["T4", "V100", "A100", "H100", "P100"])
def test_auto_picks_what_the_gpu_runs_natively(monkeypatch, capability, expected):
    gpu_of_capability(monkeypatch, *capability)
    assert choose_precision("cuda", "auto") == (expected, {})


def test_only_fp16_trains_through_an_active_grad_scaler(tiny_data):
    from PyTorch_Vision.train import make_trainer

    for precision, scaling in (("fp16", True), ("bf16", False), ("fp32", False)):
        t = make_trainer(TinyNet(), tiny_data, TrainConfig(precision=precision), "cpu")
        assert t.precision == precision and t.scaler.is_enabled() == scaling


def test_bf16_is_refused_where_a_gpu_would_only_emulate_it(monkeypatch):
    gpu_of_capability(monkeypatch, 7, 5)
    with pytest.raises(ValueError, match="compute capability 8.0.*7.5.*'fp16'"):
        choose_precision("cuda", "bf16")
    assert choose_precision("cuda", "fp32") == ("fp32", {})


def test_cpu_uses_bf16_only_where_it_is_native(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    assert choose_precision("cpu")[0] == "fp32"
    assert choose_precision("cpu", "bf16")[0] == "bf16"  # asked for explicitly: slow but correct
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    assert choose_precision("cpu")[0] == "bf16"


def cpu_with_rates(monkeypatch, bf16: float, fp32: float):
    """A CPU with native bf16 on which a training step runs at these img/s."""
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision_module, "training_rate",
                        lambda model, precision, *a, **k: {"bf16": bf16, "fp32": fp32}[precision])


def test_the_precision_is_timed_at_the_batch_the_data_allows(monkeypatch, tiny_data):
    from PyTorch_Vision.train import make_trainer

    timed = []
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision_module, "training_rate",
                        lambda model, precision, batch_size, *a, **k: timed.append(batch_size) or 1.0)
    config = TrainConfig(batch_size=100_000, precision="auto")  # a mistyped batch size must not time 100,000 images
    make_trainer(TinyNet(), tiny_data, config, "cpu")
    assert timed == [len(tiny_data.train_labels)] * 2, "one batch holds at most the whole training set"


@pytest.mark.parametrize("bf16, fp32, expected", [(125, 54, "bf16"), (47, 60, "fp32"), (100, 95, "fp32")],
                         ids=["AMX", "no AMX", "within the margin"])
def test_auto_on_a_cpu_picks_the_precision_that_trains_faster(monkeypatch, bf16, fp32, expected):
    cpu_with_rates(monkeypatch, bf16, fp32)
    assert choose_precision("cpu", "auto", TinyNet(), 32) == (expected, {"bf16": bf16, "fp32": fp32})
    assert choose_precision("cpu", "fp32", TinyNet(), 32) == ("fp32", {})  # asked for by name: nothing to time


def test_training_rate_times_a_copy_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    rate = precision_module.training_rate(model, "fp32", 8)
    assert rate > 0 and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(state, torch.random.get_rng_state())


def test_a_run_records_its_precision_and_rates_and_a_resume_elsewhere_chooses_again(monkeypatch, tiny_data,
                                                                                   tmp_path):
    import PyTorch_Vision.train as train_module
    from PyTorch_Vision.history import History
    from conftest import CrashAfter
    config = replace(CONFIG, precision="auto", epochs=3)
    cpu_with_rates(monkeypatch, 125, 54)
    with pytest.raises(KeyboardInterrupt):  # an epoch: 12 + 12 + 4 forward passes; stopped in epoch 2
        fit(CrashAfter(TinyNet(), n=28 + 4), tiny_data, config, device="cpu", out_dir=tmp_path, progress="none")
    cpu_with_rates(monkeypatch, 47, 60)  # timed again, this machine would now say fp32: it is not asked
    with pytest.raises(KeyboardInterrupt):  # epoch 2 done, stopped in epoch 3
        fit(CrashAfter(TinyNet(), n=28 + 4), tiny_data, config, device="cpu", out_dir=tmp_path, resume=True,
            progress="none")
    monkeypatch.setattr(train_module, "device_name", lambda device: "another CPU")
    history = fit(CrashAfter(TinyNet(), n=-1), tiny_data, config, device="cpu", out_dir=tmp_path, resume=True,
                  progress="none")
    run = History.load(tmp_path / "history.json").run
    assert run["precision"] == "bf16" and run["precision_rates"] == {"bf16": 125, "fp32": 54}
    assert [(s["from_epoch"], s["precision"]) for s in run["segments"]] == [(1, "bf16"), (2, "bf16"), (3, "fp32")]
    assert run["segments"][-1]["device"] == "another CPU" and run["segments"][0]["torch"] == torch.__version__
    assert len(history) == 3 and run == history.run


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="auto, bf16, fp16, fp32"):
        choose_precision("cpu", "fp8")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")


def test_an_overflowing_fp16_step_is_skipped_and_training_goes_on():
    torch.manual_seed(0)
    model = TinyNet()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)  # gradients x 2**24 overflow fp16
    step = Trainer(model, make_optimizer(model, TrainConfig(max_lr=0.1)), nn.CrossEntropyLoss(), scaler,
                   precision="fp16").step
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    loss, logits, skipped = step(x, y)
    assert logits.dtype == torch.float16 and skipped and math.isfinite(loss.item())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "a skipped step updates no weight"
    assert scaler.get_scale() == 2.0**23
    results = [step(x, y) for _ in range(10)]
    assert not results[-1][2], "once the scale fits, steps are taken again"
    assert results[-1][0] < loss, "and the model learns"


class OverflowsOnce(TinyNet):
    """TinyNet whose first training forward pass overflows fp16 (logits beyond 65504), as a bad batch can."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        logits = super().forward(x)
        self.calls += self.training
        return logits * 1e5 if self.training and self.calls == 1 else logits


def test_fp16_run_with_an_overflowing_batch_keeps_finite_figures(tiny_data):
    """The overflowed batch is skipped by GradScaler and left out of the epoch's loss and accuracy."""
    torch.manual_seed(0)
    model = OverflowsOnce()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = fit(model, tiny_data, CONFIG, device="cpu", progress="none")
    assert h.epoch == [1, 2] and all(math.isfinite(v) for v in h.train_loss + h.test_loss)
    assert h.skipped_steps[0] >= 1 and all(n >= 0 for n in h.skipped_steps)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)], \
        "a skipped first step must not warn about the schedule: stepping it is the documented choice"
    assert h.lr[-1] < 1e-3 * CONFIG.max_lr, "the schedule still ends on its planned LR"


class AlwaysOverflows(TinyNet):
    def forward(self, x):
        return super().forward(x) * 1e5


@pytest.mark.parametrize("progress", ["none", "bar"])
def test_fp16_run_that_always_overflows_stops_with_a_clear_error(tiny_data, progress):
    """With a bar too, whose figures are shown at each check: no image is counted that was not trained on."""
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match=r"every step overflowed fp16 \(GradScaler skipped all 12\) in "
                                                 r"epoch 1 \(fp16 autocast \+ GradScaler\); no checkpoint"):
        fit(AlwaysOverflows(), tiny_data, CONFIG, device="cpu", progress=progress)  # 12 batches an epoch
    with pytest.raises(FloatingPointError, match=r"overflowed on every recent step .*in epoch 1 .*Lower max_lr"):
        fit(AlwaysOverflows(), tiny_data, replace(CONFIG, batch_size=8), device="cpu", progress=progress)  # 24


def test_fp32_history_without_skipped_steps_loads(tmp_path):
    from PyTorch_Vision.history import History

    old = {k: [1] for k in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds")}
    assert History.from_dict(old).skipped_steps == [0]


def test_training_rate_waits_for_the_device_around_each_timed_pass(monkeypatch):
    """On a GPU, work runs after the call returns: a timer read without waiting measures the launches only."""
    events = []
    monkeypatch.setattr(precision_module, "wait_for", lambda *a: events.append("wait"))
    real_clock = precision_module.time.perf_counter
    monkeypatch.setattr(precision_module.time, "perf_counter", lambda: events.append("clock") or real_clock())
    precision_module.training_rate(TinyNet(), "fp32", 4, steps=2)
    assert events == ["wait", "clock", "wait", "clock"] * 3
