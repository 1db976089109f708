"""The batches training and evaluation draw from a `CIFAR10Data`, two ways: the whole set held on the device
and augmented a batch at a time there as tensors (CUDA and the CPU), or a DataLoader running the albumentations
pipeline (the reference definition; MPS)."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .data import CIFAR10Data
from .transforms import Augmentation, BatchTransforms, test_transforms, train_transforms
from .utils import usable_cores


def _batch_count(n: int, batch_size: int, train: bool) -> int:
    # a final training batch of one image would break BatchNorm, so it is dropped
    return n // batch_size if train and n % batch_size == 1 else math.ceil(n / batch_size)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


def without_hole(augmentation: Augmentation) -> Augmentation:
    """`augmentation` with CutOut off: what the epochs after `hole_epochs` train with."""
    return replace(augmentation, cutout=False)


class AugmentedDataset(Dataset):
    """(N,H,W,3) uint8 images through an albumentations pipeline -> (3,H,W) float tensor, label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(image=self.images[i])["image"], int(self.labels[i])


def _seed_worker_transform(worker_id: int) -> None:
    info = get_worker_info()
    info.dataset.transform.set_random_seed(info.seed % 2**32)


def default_num_workers(device: torch.device) -> int:
    """Loader processes: on CUDA all cores but one feed the GPU; on the CPU they would steal from training."""
    cores = usable_cores()
    if device.type == "cuda":
        return max(0, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 8 + 1)


class LoaderBatches:
    """A DataLoader over the albumentations pipeline (on_device=False, and MPS); same batches again for the same
    epoch. `plain_transform`, where given, replaces `transform` in the epochs after `hole_epochs`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, batch_size: int, train: bool,
                 device: torch.device, seed: int = 0, num_workers: int | None = None,
                 plain_transform=None, hole_epochs: int | None = None):
        self.device, self.seed, self.train = device, seed, train
        self.transforms = (transform, transform if plain_transform is None else plain_transform)
        self.hole_epochs = hole_epochs
        self.dataset = AugmentedDataset(images, labels, transform)
        self.generator = torch.Generator()
        workers = default_num_workers(device) if num_workers is None else num_workers
        self.loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=train, generator=self.generator,
                                 drop_last=train and len(labels) % batch_size == 1, num_workers=workers,
                                 pin_memory=device.type == "cuda", worker_init_fn=_seed_worker_transform)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        s = _epoch_seed(self.seed, epoch)
        self.generator.manual_seed(s)
        self.dataset.transform = self.transforms[self.hole_epochs is not None and epoch > self.hole_epochs]
        self.dataset.transform.set_random_seed(s % 2**32)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class DeviceBatches:
    """The device path: uint8 images held on the device; each batch is cropped, flipped, cut out and
    normalized there in a few tensor ops (or only normalized, for evaluation). Epochs after `hole_epochs` (None:
    none) train without the CutOut hole."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, train: bool,
                 mean, std, device: torch.device, augmentation: Augmentation = Augmentation(), seed: int = 0,
                 hole_epochs: int | None = None):
        self.images = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(labels).to(device)
        self.batch_size, self.train, self.augmentation = batch_size, train, augmentation
        self.device, self.seed, self.hole_epochs = device, seed, hole_epochs
        size = self.images.shape[-2:]
        self.with_hole = BatchTransforms(mean, std, device, augmentation, size)
        self.without_hole = BatchTransforms(mean, std, device, without_hole(augmentation), size)
        self.generator = torch.Generator(device=device)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(_epoch_seed(self.seed, epoch))
        hole = self.hole_epochs is None or epoch <= self.hole_epochs
        self.transforms = self.with_hole if hole else self.without_hole

    def __len__(self) -> int:
        return _batch_count(len(self.labels), self.batch_size, self.train)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, device=self.device, generator=self.generator) if self.train else None
        for i in range(len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is not None:
                idx = order[idx]
            images, labels = self.images[idx], self.labels[idx]
            if self.train:
                yield self.transforms.train(images, self.generator), labels
            else:
                yield self.transforms.normalize(images), labels


def _on_device(device: torch.device, on_device: bool | None) -> bool:
    return device.type in ("cuda", "cpu") if on_device is None else on_device


def evaluation_batches(data: CIFAR10Data, batch_size: int, device: torch.device, on_device: bool | None = None,
                       num_workers: int | None = None):
    """The test set's batch source, normalized, in order: the second half of `make_batches`."""
    device = torch.device(device)
    if _on_device(device, on_device):
        return DeviceBatches(data.test_images, data.test_labels, batch_size, False, data.mean, data.std, device)
    return LoaderBatches(data.test_images, data.test_labels, test_transforms(data.mean, data.std), batch_size,
                         False, device, 0, num_workers)


def training_set_batches(data: CIFAR10Data, batch_size: int, device: torch.device, hole: bool = False,
                         seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training images in order, normalized, with no augmentation or (`hole`) with one CutOut hole on each,
    placed by a generator of `seed`: what the model is asked to fit, to measure how well it does."""
    device = torch.device(device)
    transforms = BatchTransforms(data.mean, data.std, device, size=data.train_images.shape[1:3])
    generator = torch.Generator(device=device).manual_seed(seed)
    for i in range(0, len(data.train_labels), batch_size):
        x = torch.from_numpy(data.train_images[i:i + batch_size]).to(device).permute(0, 3, 1, 2)
        if hole:
            x = transforms.cutout(x, generator=generator)
        yield transforms.normalize(x), torch.from_numpy(data.train_labels[i:i + batch_size]).to(device)


def make_batches(data: CIFAR10Data, batch_size: int, device: torch.device,
                 augmentation: Augmentation = Augmentation(), seed: int = 0, on_device: bool | None = None,
                 num_workers: int | None = None, hole_epochs: int | None = None):
    """(train, test) batch sources, training batches augmented by `augmentation` (without the CutOut hole in the
    epochs after `hole_epochs`; None: in every epoch). `on_device` (default: on CUDA and the CPU) holds the data
    on the device and augments whole batches there, with no worker processes to compete with training for the
    CPU's cores; otherwise a DataLoader runs the albumentations pipelines (the reference definition; MPS)."""
    device = torch.device(device)
    test = evaluation_batches(data, batch_size, device, on_device, num_workers)
    if _on_device(device, on_device):
        return DeviceBatches(data.train_images, data.train_labels, batch_size, True, data.mean, data.std,
                             device, augmentation, seed, hole_epochs), test
    return LoaderBatches(data.train_images, data.train_labels, train_transforms(data.mean, data.std, augmentation),
                         batch_size, True, device, seed, num_workers,
                         train_transforms(data.mean, data.std, without_hole(augmentation)), hole_epochs), test
