import pytest
import torch

from PyTorch_Vision.batches import make_batches
from PyTorch_Vision.data import synthetic_cifar10
from PyTorch_Vision.transforms import Augmentation


@pytest.mark.parametrize("on_device,workers", [(False, 0), (False, 2), (True, None)],
                         ids=["loader", "loader-2-workers", "on-device"])
def test_batches_repeat_per_epoch_and_cover_the_set(on_device, workers):
    data = synthetic_cifar10(100, 50)
    train, test = make_batches(data, 32, "cpu", seed=3, on_device=on_device, num_workers=workers)
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
        train, _ = make_batches(data, 32, "cpu", on_device=on_device)
        assert len(train) == 2 and sum(len(y) for _, y in train) == 64


@pytest.mark.parametrize("padding", ["mean", "reflect"])
def test_device_batches_build_no_constant_tensors_per_batch(monkeypatch, padding):
    """On a GPU each tensor made from host values (the fill colour, mean, std, coordinates) is a copy to the
    device: the batch transforms make them once, not per batch."""
    data = synthetic_cifar10(96, 32)
    train, test = make_batches(data, 32, "cpu", Augmentation(cutout_p=0.5, padding=padding), on_device=True)
    made = []
    for name in ("tensor", "as_tensor", "arange", "full", "linspace", "ones", "zeros"):
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _f=original, _n=name, **k: made.append(_n) or _f(*a, **k))
    batches = list(train) + list(test)
    assert len(batches) == 4 and made == []
