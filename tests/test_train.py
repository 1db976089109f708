import copy
import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from conftest import CrashAfter, TinyNet
from PyTorch_Vision.config import TrainConfig
from PyTorch_Vision.data import make_batches, make_data, synthetic_cifar10
from PyTorch_Vision.history import HISTORY_KEYS, History
from PyTorch_Vision.models import ResNet18
from PyTorch_Vision.train import CheckpointError, fit, load_checkpoint, make_optimizer, make_scheduler, \
    recompute_batchnorm, warmup_and_peak
from PyTorch_Vision.utils import choose_precision

# TinyNet: no long warm-up; runs compared bit for bit, so not a precision timed afresh for each
CONFIG = TrainConfig(epochs=4, batch_size=32, max_lr=0.05, seed=0, min_warmup_steps=1, precision="fp32")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return TinyNet()


@pytest.mark.slow
@pytest.mark.parametrize("on_device_data", [False, True], ids=["albumentations-loader", "batched-on-device"])
def test_short_training_lowers_the_loss(tiny_data, on_device_data):
    config = replace(CONFIG, epochs=6, on_device_data=on_device_data)
    h = fit(tiny_model(), tiny_data, config, device="cpu", progress="none")
    assert h.epoch == [1, 2, 3, 4, 5, 6]
    assert h.train_loss[-1] < 0.8 * h.train_loss[0]
    assert h.test_acc[-1] > 30  # chance is 10%


def test_one_cycle_is_stepped_every_batch(tiny_data):
    h = fit(tiny_model(), tiny_data, replace(CONFIG, epochs=4, pct_start=0.25), device="cpu", progress="none")
    assert max(h.lr) == pytest.approx(CONFIG.max_lr, rel=0.2), "warm-up must reach max_lr within the first epochs"
    assert h.lr[-1] < 1e-3 * CONFIG.max_lr, "the schedule must anneal to ~0 by the last batch"


def test_short_runs_warm_up_no_faster_than_the_recipe():
    """A run whose warm-up is shorter than min_warmup_steps peaks lower, in proportion; longer runs, the 20-epoch
    recipe among them (391 batches of 128 an epoch on 50,000 images), keep max_lr exactly."""
    recipe = TrainConfig()
    assert warmup_and_peak(recipe, 20 * 391) == (1955, recipe.max_lr)
    assert warmup_and_peak(recipe, 4 * recipe.min_warmup_steps) == (recipe.min_warmup_steps, recipe.max_lr)
    for total in (3, 10, 30, 98, 250, 399):
        warmup, peak = warmup_and_peak(recipe, total)
        assert warmup == pytest.approx(max(0.25 * total, 2)) and peak < recipe.max_lr
        assert peak / warmup == pytest.approx(recipe.max_lr / recipe.min_warmup_steps)
    # a first try: 3 epochs of 5,000 images in batches of 512, 10 batches an epoch
    short = replace(recipe, epochs=3)
    optimizer = make_optimizer(TinyNet(), short)
    scheduler = make_scheduler(optimizer, short, steps_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = recipe.max_lr * 7.5 / recipe.min_warmup_steps
    assert peak * 0.95 < max(lrs) <= peak and lrs[0] == pytest.approx(peak / recipe.div_factor)


@pytest.mark.slow
def test_a_short_run_of_the_recipe_learns():
    """ResNet18 at max_lr 0.4 (the recipe's at batch 512) for 3 epochs of 512 small synthetic images (24 batches of 64, a
    warm-up of 6): the warm-up rule keeps the loss below chance's and the run learns. Without the rule
    (min_warmup_steps=1: 0.4 after 6 batches) the loss blew up to 10-14 and the run ended at 25% (~1 min)."""
    data = synthetic_cifar10(n_train=512, n_test=200, seed=0)
    torch.manual_seed(0)
    h = fit(ResNet18(), data, TrainConfig(epochs=3, batch_size=64, max_lr=0.4), device="cpu", progress="none")
    assert h.run["peak_lr"] == pytest.approx(0.4 * 6 / 100)
    assert max(h.train_loss) < math.log(10) and h.test_acc[-1] > 50  # chance: 10%


def test_batchnorm_statistics_are_recomputed_over_the_first_images():
    """Plain averages of the first batches' statistics (unbiased variance, as BatchNorm keeps it), with the weights
    as they are; weights, mode and momentum as they were."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    weights = copy.deepcopy(model[0].state_dict())
    batches = [(torch.randn(8, 3, 8, 8) * (i + 1) + i, None) for i in range(4)]
    recompute_batchnorm(model, batches, images=16)  # the first two batches
    with torch.no_grad():
        features = [model[0](x) for x, _ in batches[:2]]
    torch.testing.assert_close(model[1].running_mean, torch.stack([f.mean((0, 2, 3)) for f in features]).mean(0))
    torch.testing.assert_close(model[1].running_var, torch.stack([f.var((0, 2, 3)) for f in features]).mean(0))
    assert not model.training and model[1].momentum == 0.1
    assert all(torch.equal(v, model[0].state_dict()[k]) for k, v in weights.items())


def test_batchnorm_statistics_change_the_evaluation_not_the_training(tiny_data):
    """Training normalizes by each batch's own statistics, so it is bit-identical with and without the
    recomputation; the model ends with its final weights' statistics over the last epoch's first images."""
    config = replace(CONFIG, epochs=2, precision="fp32", bn_stats_images=64)
    recomputed, running = tiny_model(), tiny_model()
    h = fit(recomputed, tiny_data, config, device="cpu", progress="none")
    h_running = fit(running, tiny_data, replace(config, bn_stats_images=0), device="cpu", progress="none")
    assert h.train_loss == h_running.train_loss and h.train_acc == h_running.train_acc
    assert all(torch.equal(a, b) for a, b in zip(recomputed.parameters(), running.parameters()))
    train_batches, _ = make_batches(tiny_data, config.batch_size, torch.device("cpu"), config)
    train_batches.set_epoch(2)
    by_hand = copy.deepcopy(running)
    recompute_batchnorm(by_hand, train_batches, 64, channels_last=True)
    statistics = lambda m: [b for name, b in m.named_buffers() if "running" in name]  # noqa: E731
    for a, b in zip(statistics(recomputed), statistics(by_hand)):
        torch.testing.assert_close(a, b)
    assert not all(torch.allclose(a, b) for a, b in zip(statistics(recomputed), statistics(running)))


def test_momentum_cycles_against_the_learning_rate(tiny_data):
    """OneCycle moves Nesterov momentum opposite to the LR: 0.95 at the start and end, 0.85 at the LR's peak."""
    config = replace(CONFIG, epochs=4, pct_start=0.25)
    optimizer = make_optimizer(TinyNet(), config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=10)
    seen = []
    for _ in range(40):
        seen.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["momentum"]))
        optimizer.step()
        scheduler.step()
    lrs, momenta = zip(*seen)
    assert (config.max_momentum, config.base_momentum) == (0.95, 0.85)
    assert momenta[0] == pytest.approx(0.95) and momenta[lrs.index(max(lrs))] == pytest.approx(0.85)
    assert momenta[-1] == pytest.approx(0.95, abs=1e-3) and optimizer.param_groups[0]["nesterov"]


def test_weight_decay_skips_batchnorm_and_biases():
    model = TinyNet()
    decayed, plain = make_optimizer(model, CONFIG).param_groups
    assert decayed["weight_decay"] == CONFIG.weight_decay and plain["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert decayed["nesterov"]


def test_one_step_shrinks_the_weights_by_their_decay_and_leaves_batchnorm_and_biases():
    """With no loss gradient, one Nesterov step shrinks a decayed parameter by lr * wd * (1 + momentum) of itself
    and leaves an undecayed one as it is."""
    model = TinyNet()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(2.0)
    config = replace(CONFIG, weight_decay=0.01)
    optimizer = make_optimizer(model, config)
    for group in optimizer.param_groups:
        group["lr"], group["momentum"] = 0.1, 0.9
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        decayed = p.ndim > 1
        expected = 2.0 * (1 - 0.1 * 0.01 * 1.9) if decayed else 2.0
        torch.testing.assert_close(p.detach(), torch.full_like(p, expected), msg=name)


def test_history_round_trip(tmp_path):
    h = History()
    h.append(epoch=1, train_loss=2.0, train_acc=20.0, test_loss=1.9, test_acc=25.0, lr=0.1, epoch_seconds=3.5,
             skipped_steps=2)
    h.save(tmp_path / "history.json")
    assert set(json.loads((tmp_path / "history.json").read_text())) == {*HISTORY_KEYS, "skipped_steps", "run"}
    assert History.load(tmp_path / "history.json") == h
    assert "| 1 | 2.0000 | 20.00 |" in h.table()
    (tmp_path / "other.json").write_text('{"epoch": []}')
    with pytest.raises(ValueError, match="missing"):
        History.load(tmp_path / "other.json")
    (tmp_path / "broken.json").write_text('{"epoch": [')
    with pytest.raises(ValueError, match="not JSON"):
        History.load(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="no history at"):
        History.load(tmp_path / "absent.json")


def test_history_summary_names_final_and_best_epochs():
    h = History()
    for e, acc, sec in [(1, 50.0, 10.0), (2, 70.5, 12.0), (3, 70.25, 14.0)]:
        h.append(epoch=e, train_loss=1.0, train_acc=acc, test_loss=1.0, test_acc=acc, lr=0.1, epoch_seconds=sec)
    assert dict(h.headline()) == {"final test accuracy (epoch 3)": "**70.25%**",
                                 "best test accuracy": "70.50% (epoch 2)",
                                 "mean time per epoch (train + test)": "12.0 s", "training time, all epochs (summed across resumes)": "0.6 min"}
    with pytest.raises(ValueError, match="empty history"):
        History().headline()


@pytest.mark.slow
@pytest.mark.parametrize("on_device_data", [False, True], ids=["albumentations-loader", "batched-on-device"])
def test_killed_within_an_epoch_resumes_from_the_last_whole_epoch_to_the_same_run(tiny_data, tmp_path,
                                                                                  on_device_data, capsys):
    config = replace(CONFIG, on_device_data=on_device_data)
    straight = fit(tiny_model(), tiny_data, config, device="cpu", out_dir=tmp_path / "a", progress="none")

    steps, statistics, evals = 6, 6, 2  # 192 train / 32; BatchNorm's statistics over the 192 again; 64 test / 32
    killed = CrashAfter(tiny_model(), n=2 * (steps + statistics + evals) + 4)  # in the 4th batch of epoch 3
    with pytest.raises(KeyboardInterrupt, match="stopped in epoch 3; the checkpoint of epoch 2 is kept"):
        fit(killed, tiny_data, config, device="cpu", out_dir=tmp_path / "b", progress="none")
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["history"]["epoch"] == [1, 2]
    capsys.readouterr()

    resumed_model = CrashAfter(tiny_model(seed=99), n=-1)  # different init: everything must come from the checkpoint
    resumed = fit(resumed_model, tiny_data, config, device="cpu", out_dir=tmp_path / "b", resume=True,
                  progress="epoch")
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == f"resumed {tmp_path / 'b' / 'checkpoint.pt'} after epoch 2/4"
    assert lines[3].startswith("training on CPU") and lines[3].endswith(f" in fp32, checkpoints in {tmp_path / 'b'}")
    assert [line.split()[:2] for line in lines[:2] + lines[4:]] == [["epoch", f"{e}/4"] for e in (1, 2, 3, 4)]
    for key in HISTORY_KEYS[:-1]:
        assert getattr(resumed, key) == pytest.approx(getattr(straight, key), rel=1e-6, abs=1e-7), key
    assert History.load(tmp_path / "b" / "history.json").test_acc == resumed.test_acc
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.allclose(a[k].float(), b["model." + k].float(), atol=1e-6) for k in a)


def test_a_checkpoint_written_within_an_epoch_by_an_older_version_is_refused(tiny_data, tmp_path):
    fit(tiny_model(), tiny_data, replace(CONFIG, epochs=1), device="cpu", out_dir=tmp_path, progress="none")
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "partial": {"epoch": 2, "batches": 3}}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="written within an epoch by an older version"):
        fit(tiny_model(), tiny_data, replace(CONFIG, epochs=1), device="cpu", out_dir=tmp_path, resume=True)


def test_resume_errors(tiny_data, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit(tiny_model(), tiny_data, CONFIG, device="cpu", out_dir=tmp_path, resume=True)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        fit(tiny_model(), tiny_data, CONFIG, device="cpu", out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="already holds a run"):
        fit(tiny_model(), tiny_data, CONFIG, device="cpu", out_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"garbage", "nothing on disk may be overwritten"


def test_resume_with_other_settings_or_model_is_refused(tiny_data, tmp_path):
    fit(tiny_model(), tiny_data, replace(CONFIG, epochs=1), device="cpu", out_dir=tmp_path, progress="none")
    with pytest.raises(CheckpointError, match="max_lr: checkpoint 0.05 vs now 0.1"):
        fit(tiny_model(), tiny_data, replace(CONFIG, epochs=1, max_lr=0.1), device="cpu", out_dir=tmp_path,
            resume=True)
    with pytest.raises(CheckpointError, match=r"data: checkpoint \{'n_train': 192.*vs now \{'n_train': 96"):
        fit(tiny_model(), make_data(tiny_data.train_images[:96], tiny_data.train_labels[:96], tiny_data.test_images,
                                    tiny_data.test_labels, tiny_data.classes, "half"),
            replace(CONFIG, epochs=1), device="cpu", out_dir=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        fit(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)), tiny_data,
            replace(CONFIG, epochs=1), device="cpu", out_dir=tmp_path, resume=True)


def test_resuming_a_finished_run_trains_nothing_and_records_no_new_stretch(tiny_data, tmp_path, capsys):
    config = replace(CONFIG, epochs=1)
    trained = tiny_model()
    done = fit(trained, tiny_data, config, device="cpu", out_dir=tmp_path, progress="none")
    on_disk = (tmp_path / "checkpoint.pt").read_bytes(), (tmp_path / "history.json").read_bytes()
    reloaded = tiny_model(seed=99)
    again = fit(reloaded, tiny_data, config, device="cpu", out_dir=tmp_path, resume=True, progress="epoch")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["epoch", "1/1"] and lines[1:] == [
        f"resumed {tmp_path / 'checkpoint.pt'} after epoch 1/1: finished, nothing left to train"]
    assert again.to_dict() == done.to_dict() and len(again.run["segments"]) == 1
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in trained.state_dict().items())
    assert ((tmp_path / "checkpoint.pt").read_bytes(), (tmp_path / "history.json").read_bytes()) == on_disk


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": -1}, {"max_lr": 0.0}, {"max_lr": float("nan")},
                                    {"epochs": 2.5}, {"min_warmup_steps": 0}])
def test_config_rejects_non_positive_values(kwargs):
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(**kwargs)
    with pytest.raises(ValueError, match="bn_stats_images must be a whole number >= 0"):
        TrainConfig(bn_stats_images=-1)


@pytest.mark.parametrize("kwargs, message", [
    ({"max_momentum": 1.0}, "max_momentum must be a number from 0 up to"), ({"label_smoothing": 1}, "label_smoothing must be"),
    ({"pct_start": 0.0}, "pct_start must be a number between 0 and 1"), ({"flip": 1}, "flip must be True or False"),
    ({"anneal": "step"}, "anneal must be one of cos, linear"), ({"epochs": True}, "epochs must be a positive whole"),
    ({"base_momentum": 0.96}, r"base_momentum \(0.96\) must not exceed max_momentum \(0.95\)")])
def test_each_setting_is_checked_where_it_is_declared(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_text_typed_in_code_is_refused_naming_the_field():
    """Text is read where it is typed: on the command line and in S11_<FIELD>; in code a setting is its value."""
    with pytest.raises(ValueError, match="batch_size must be a positive whole number, got '256'"):
        TrainConfig(batch_size="256")
    with pytest.raises(ValueError, match="on_device_data must be True, False or None, got 'auto'"):
        TrainConfig(on_device_data="auto")


def test_too_few_batches_for_a_schedule(tiny_data):
    with pytest.raises(ValueError, match="at least 3 training batches"):
        fit(tiny_model(), tiny_data, TrainConfig(epochs=1, batch_size=128), device="cpu", progress="none")


def test_history_json_records_what_produced_the_run(tiny_data, tmp_path):
    config = replace(CONFIG, epochs=1, cutout_p=0.25)
    fit(tiny_model(), tiny_data, config, device="cpu", out_dir=tmp_path, progress="none")
    run = History.load(tmp_path / "history.json").run
    assert run["config"]["cutout_p"] == 0.25 and run["config"]["max_lr"] == CONFIG.max_lr
    assert (run["data"], run["n_train"], run["n_test"]) == (tiny_data.source, 192, 64)
    # fp32, or bf16 on a CPU that runs it natively
    assert run["precision"] == choose_precision("cpu", config.precision)[0] and run["device"].startswith("CPU")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_training_reads_the_device_once_per_check(monkeypatch, tmp_path, precision):
    """Each read of a device value (.item(), .tolist(), bool(), float(), int()) makes the host wait for the GPU:
    an epoch of 40 batches reads its running sums once every 16 (at 16, 32 and the last), with a run folder."""
    import PyTorch_Vision.train as train_module

    events = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _f=original, **k: events.append("read") or
                            _f(self, *a, **k))
    step, evaluate = train_module.Trainer.step, train_module.evaluate
    monkeypatch.setattr(train_module.Trainer, "step", lambda self, x, y: events.append("step") or step(self, x, y))
    monkeypatch.setattr(train_module, "evaluate", lambda *a: events.append("evaluate") or evaluate(*a))
    data = synthetic_cifar10(n_train=160, n_test=16, seed=0)
    config = TrainConfig(epochs=1, batch_size=4, bn_stats_images=0, precision=precision,
                         min_warmup_steps=1)
    fit(TinyNet(), data, config, "cpu", out_dir=tmp_path, progress="none")
    training = events[events.index("step"):events.index("evaluate")]
    # in fp16, torch's GradScaler.step reads its inf flag every step (not with fused SGD, but with it, on the CPU
    # in torch 2.14, a run whose first fp16 step overflowed diverged): ours are the 3 reads of the checks
    assert training.count("step") == 40 and training.count("read") == 3 + 40 * (precision == "fp16")


def test_changed_settings_get_a_folder_of_their_own_and_the_same_settings_find_theirs(tiny_data, tmp_path):
    """What the notebook does when a student changes a setting and runs again: no error, a new run, said where."""
    from PyTorch_Vision.train import CHECKPOINT, settings_folder

    config = replace(CONFIG, epochs=1)
    folder = settings_folder(tmp_path, config, tiny_data)
    changed = settings_folder(tmp_path, replace(config, flip=False), tiny_data)
    assert folder.name == "epochs=1,batch_size=32,max_lr=0.05,min_warmup_steps=1,precision=fp32,images=192+64"
    assert changed.name == folder.name.replace("min_warmup_steps=1,", "min_warmup_steps=1,flip=False,")
    assert settings_folder(tmp_path, TrainConfig(), tiny_data).name == "images=192+64"
    first = fit(tiny_model(), tiny_data, config, device="cpu", out_dir=folder, progress="none")
    again = fit(tiny_model(), tiny_data, config, device="cpu", out_dir=folder,
                resume=(folder / CHECKPOINT).exists(), progress="none")
    assert again.to_dict() == first.to_dict(), "the same settings find their finished run"
    other = fit(tiny_model(), tiny_data, replace(config, flip=False), device="cpu", out_dir=changed,
                resume=(changed / CHECKPOINT).exists(), progress="none")
    assert len(other) == 1 and (changed / CHECKPOINT).exists() and other.run["config"]["flip"] is False
