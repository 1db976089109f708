import pytest
import torch

from PyTorch_Vision.config import TrainConfig
from PyTorch_Vision.data import make_batches, synthetic_cifar10


@pytest.mark.parametrize("on_device,workers", [(False, 0), (False, 2), (True, None)],
                         ids=["loader", "loader-2-workers", "on-device"])
def test_batches_repeat_per_epoch_and_cover_the_set(on_device, workers):
    data = synthetic_cifar10(100, 50)
    train, test = make_batches(data, 32, "cpu", TrainConfig(seed=3, on_device_data=on_device), num_workers=workers)
    assert len(train) == 4 and len(test) == 2

    def epoch(e):
        train.set_epoch(e)
        return list(train)

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    assert sorted(torch.cat([y for _, y in first]).tolist()) == sorted(data.train_labels.tolist())
    x, y = next(iter(test))
    assert x.dtype == torch.float32 and x.shape == (32, 3, 32, 32)
    assert torch.equal(y, torch.from_numpy(data.test_labels[:32]))


def test_final_batch_of_one_is_dropped_in_training():
    data = synthetic_cifar10(65, 10)
    for on_device in (False, True):
        train, _ = make_batches(data, 32, "cpu", TrainConfig(on_device_data=on_device))
        assert len(train) == 2 and sum(len(y) for _, y in train) == 64


def test_device_batches_build_no_constant_tensors_per_batch(monkeypatch):
    """On a GPU each tensor made from host values (the fill colour, mean, std, coordinates) is a copy to the
    device: the batch transforms make them once, not per batch."""
    data = synthetic_cifar10(96, 32)
    train, test = make_batches(data, 32, "cpu", TrainConfig(cutout_p=0.5, on_device_data=True))
    made = []
    for name in ("tensor", "as_tensor", "arange", "full", "linspace", "ones", "zeros"):
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _f=original, _n=name, **k: made.append(_n) or _f(*a, **k))
    batches = list(train) + list(test)
    assert len(batches) == 4 and made == []


def test_training_set_batches_are_the_training_images_in_order_plain_or_with_one_cutout_each():
    from PyTorch_Vision.data import training_set_batches
    from PyTorch_Vision.transforms import CUTOUT, batch_normalize

    data = synthetic_cifar10(70, 8)
    images = torch.from_numpy(data.train_images).permute(0, 3, 1, 2)
    plain = list(training_set_batches(data, 32, "cpu"))
    assert [len(y) for _, y in plain] == [32, 32, 6]
    torch.testing.assert_close(torch.cat([x for x, _ in plain]), batch_normalize(images, data.mean, data.std))
    assert torch.equal(torch.cat([y for _, y in plain]), torch.from_numpy(data.train_labels))
    holed = torch.cat([x for x, _ in training_set_batches(data, 32, "cpu", cutout=True, seed=5)])
    changed = ~torch.isclose(holed, torch.cat([x for x, _ in plain])).all(1)  # (N,H,W) pixels CutOut replaced
    assert (changed.flatten(1).sum(1) <= CUTOUT * CUTOUT).all() and (changed.flatten(1).sum(1) > CUTOUT * CUTOUT / 2).all()
    again = torch.cat([x for x, _ in training_set_batches(data, 32, "cpu", cutout=True, seed=5)])
    assert torch.equal(holed, again), "the same seed, the same squares"
