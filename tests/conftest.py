import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from PyTorch_Vision.data import synthetic_cifar10  # noqa: E402

# a .tar.gz of CIFAR-10 in ImageFolder layout (cifar10-jpeg/train/<class>/..., test/...), where the machine has one
CIFAR10_ARCHIVE = Path(os.environ.get("S11_TEST_CIFAR10_ARCHIVE", "/nonexistent/cifar10-jpeg.tar.gz"))


class TinyNet(nn.Module):
    """A small conv net with BatchNorm: fast enough to train for several epochs in a test."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(4), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.linear(self.features(x).mean((2, 3)))


class PlainNet(nn.Module):
    """TinyNet without BatchNorm: a step on a batch split over processes equals the step on the whole batch."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.linear = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.linear(self.features(x).mean((2, 3)))


class CrashAfter(nn.Module):
    """Wraps a model and raises on the n-th forward pass: a run killed in the middle of an epoch."""

    def __init__(self, model, n):
        super().__init__()
        self.model, self.calls, self.n = model, 0, n

    def forward(self, x):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt("killed")
        return self.model(x)


@pytest.fixture
def tiny_data():
    return synthetic_cifar10(n_train=192, n_test=64, seed=0)


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray, classes, split: str) -> None:
    from PIL import Image

    for i, (x, y) in enumerate(zip(images, labels)):
        folder = root / split / classes[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(folder / f"{i:05d}.png")


@pytest.fixture
def image_folder(tmp_path):
    """A small CIFAR-like copy in ImageFolder layout (PNG), and the arrays it was written from."""
    data = synthetic_cifar10(n_train=60, n_test=30, seed=1)
    root = tmp_path / "cifar"
    write_image_folder(root, data.train_images, data.train_labels, data.classes, "train")
    write_image_folder(root, data.test_images, data.test_labels, data.classes, "test")
    return root, data


def seeded(fn, seed=0):
    torch.manual_seed(seed)
    return fn()
