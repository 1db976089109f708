"""CIFAR-10 in memory as uint8 arrays (from an ImageFolder copy, torchvision's pickles or its download, or a
synthetic stand-in for tests), and its batches two ways: augmented as whole tensors on the device (CUDA and the CPU),
or by a DataLoader running the albumentations pipeline (the reference definition; MPS)."""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .config import TrainConfig
from .transforms import BatchTransforms, test_transforms, train_transforms
from .utils import usable_cores

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
SIZE = 32


class DataError(ValueError):
    """The data folder or its contents cannot be used; the message says what to do."""


@dataclass(frozen=True)
class CIFAR10Data:
    """Train and test images as (N,32,32,3) uint8 arrays with int64 labels, class names and channel stats."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: list[str]
    mean: tuple[float, float, float]  # per channel, 0..1, from the training images
    std: tuple[float, float, float]
    source: str

    def fingerprint(self) -> dict:
        """What a checkpoint must agree with to be resumed on this data."""
        return {"n_train": len(self.train_labels), "n_test": len(self.test_labels), "classes": list(self.classes)}


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(N,H,W,3) uint8 -> per-channel mean and std in 0..1."""
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


def _subset(images: np.ndarray, labels: np.ndarray, limit: int | None, seed: int):
    if limit is None or limit >= len(labels):
        return images, labels
    if limit <= 0:
        raise DataError(f"a limit on the number of images must be positive, got {limit}")
    keep = np.sort(np.random.default_rng(seed).permutation(len(labels))[:limit])
    return images[keep], labels[keep]


def make_data(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
              test_labels: np.ndarray, classes: list[str], source: str,
              limit_train: int | None = None, limit_test: int | None = None) -> CIFAR10Data:
    """Bundle arrays into CIFAR10Data, optionally keeping a fixed random subset; stats from the kept train set."""
    train_images, train_labels = _subset(train_images, train_labels, limit_train, seed=0)
    test_images, test_labels = _subset(test_images, test_labels, limit_test, seed=1)
    if len(train_labels) == 0 or len(test_labels) == 0:
        raise DataError(f"{source} holds {len(train_labels)} training and {len(test_labels)} test images; both are "
                        "needed")
    mean, std = channel_stats(train_images)
    flat = [name for name, s in zip("RGB", std) if s < 1e-6]  # float rounding leaves ~1e-17, not 0
    if flat:
        raise DataError(f"the training images of {source} do not vary at all in channel {'/'.join(flat)} (every "
                        "pixel the same), so they cannot be normalized: check that the folder holds real images")
    return CIFAR10Data(np.ascontiguousarray(train_images), train_labels.astype(np.int64),
                       np.ascontiguousarray(test_images), test_labels.astype(np.int64),
                       list(classes), mean, std, source)


def _read_image_folder(split_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{split_dir} has no class folders; expected {split_dir}/<class>/<image files>")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (split_dir / name).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"class folder {split_dir / name} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        for f in files:
            try:
                with Image.open(f) as im:
                    rgb = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"cannot decode image {f}: {e}. Remove or replace the file.") from None
            if rgb.shape[:2] != (SIZE, SIZE):
                raise DataError(f"image {f} is {rgb.shape[1]}x{rgb.shape[0]}, but CIFAR-10 images are 32x32; "
                                "this package does not resize: resize the copy or remove the file")
            images.append(rgb)
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64), classes


def _read_python_batches(folder: Path) -> tuple[np.ndarray, ...]:
    def read(name: str):
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        return d["data"].reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1), np.array(d["labels"], dtype=np.int64)

    try:
        parts = [read(f"data_batch_{i}") for i in range(1, 6)]
        test_images, test_labels = read("test_batch")
        with open(folder / "batches.meta", "rb") as f:
            classes = pickle.load(f, encoding="latin1")["label_names"]
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
        raise DataError(f"{folder} is not a complete cifar-10-batches-py folder ({e}); "
                        "delete it to download again, or point --data-dir at a good copy") from None
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            test_images, test_labels, classes)


def load_cifar10(data_dir: str | os.PathLike = "data", download: bool = True, limit_train: int | None = None,
                 limit_test: int | None = None) -> CIFAR10Data:
    """CIFAR-10 from `data_dir` (ImageFolder layout, cifar-10-batches-py, or downloaded there), decoded once into
    memory as uint8; `limit_*` keep a fixed random subset."""
    root = Path(data_dir).expanduser()
    if (root / "train").is_dir() or (root / "test").is_dir():
        missing = [s for s in ("train", "test") if not (root / s).is_dir()]
        if missing:
            raise DataError(f"{root} has no {missing[0]}/ folder; the ImageFolder layout needs both train/ and test/")
        train_images, train_labels, classes = _read_image_folder(root / "train")
        test_images, test_labels, test_classes = _read_image_folder(root / "test")
        if test_classes != classes:
            raise DataError(f"train and test class folders differ in {root}: "
                            f"train has {classes}, test has {test_classes}")
        source = f"ImageFolder copy at {root}"
    else:
        batches = root if (root / "batches.meta").exists() else root / "cifar-10-batches-py"
        if not batches.is_dir():
            if not download:
                raise DataError(f"no CIFAR-10 found in {root}: expected train/ and test/ class folders or a "
                                "cifar-10-batches-py folder")
            _download(root)
        train_images, train_labels, test_images, test_labels, classes = _read_python_batches(batches)
        source = f"torchvision CIFAR-10 at {batches}"
    return make_data(train_images, train_labels, test_images, test_labels, classes, source, limit_train, limit_test)


def _download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    try:
        root.mkdir(parents=True, exist_ok=True)
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # urllib raises URLError, socket errors, HTTP errors...
        raise DataError(f"could not download CIFAR-10 into {root} ({type(e).__name__}: {e}); without network, "
                        "pass --data-dir pointing at an offline copy (train/<class>/ and test/<class>/ "
                        "folders, or cifar-10-batches-py)") from None


def synthetic_cifar10(n_train: int = 512, n_test: int = 256, seed: int = 0) -> CIFAR10Data:
    """Small learnable stand-in for CIFAR-10 (each class a colour and stripe pattern plus noise), for tests
    and smoke runs on machines without the data."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(10, 3))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]

    def draw(n: int):
        labels = rng.integers(0, 10, size=n)
        angle = labels[:, None, None] * np.pi / 10
        stripes = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * (0.4 + 0.05 * labels[:, None, None]))
        base = colours[labels][:, None, None, :] + 30 * stripes[..., None]
        noisy = base + rng.normal(0, 25, size=(n, SIZE, SIZE, 3))
        return np.clip(noisy, 0, 255).astype(np.uint8), labels.astype(np.int64)

    train_images, train_labels = draw(n_train)
    test_images, test_labels = draw(n_test)
    return make_data(train_images, train_labels, test_images, test_labels, CIFAR10_CLASSES,
                     "synthetic stand-in (coloured stripes, not CIFAR-10)")


def _batch_count(n: int, batch_size: int, train: bool) -> int:
    # a final training batch of one image would break BatchNorm, so it is dropped
    return n // batch_size if train and n % batch_size == 1 else math.ceil(n / batch_size)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


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
    """A DataLoader over an albumentations pipeline (on_device_data=0, and MPS); the same batches again for the
    same epoch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, batch_size: int, train: bool,
                 device: torch.device, seed: int = 0, num_workers: int | None = None):
        self.device, self.seed = device, seed
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
        self.dataset.transform.set_random_seed(s % 2**32)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class DeviceBatches:
    """The device path: uint8 images held on the device; each batch is cropped, flipped, cut out and normalized
    there in a few tensor ops (or only normalized, for evaluation)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, train: bool, mean, std,
                 device: torch.device, config: TrainConfig = TrainConfig(), seed: int = 0):
        self.images = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(labels).to(device)
        self.batch_size, self.train, self.device, self.seed = batch_size, train, device, seed
        self.transforms = BatchTransforms(mean, std, device, config, self.images.shape[-2:])
        self.generator = torch.Generator(device=device)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(_epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return _batch_count(len(self.labels), self.batch_size, self.train)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.labels), device=self.device, generator=self.generator) if self.train else None
        for i in range(len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            idx = order[idx] if order is not None else idx
            images, labels = self.images[idx], self.labels[idx]
            if self.train:
                yield self.transforms.train(images, self.generator), labels
            else:
                yield self.transforms.normalize(images), labels


def shard(batches, rank: int, world: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Process `rank`'s 1/`world` of every batch: together the processes train on the batches one would."""
    for x, y in batches:
        size = len(y) // world
        yield x[rank * size:(rank + 1) * size], y[rank * size:(rank + 1) * size]


def _on_device(device: torch.device, on_device: bool | None) -> bool:
    return device.type in ("cuda", "cpu") if on_device is None else on_device


def evaluation_batches(data: CIFAR10Data, batch_size: int, device: torch.device, on_device: bool | None = None,
                       num_workers: int | None = None):
    """The test set's batches, normalized, in order: the second half of `make_batches`."""
    device = torch.device(device)
    if _on_device(device, on_device):
        return DeviceBatches(data.test_images, data.test_labels, batch_size, False, data.mean, data.std, device)
    return LoaderBatches(data.test_images, data.test_labels, test_transforms(data.mean, data.std), batch_size,
                         False, device, 0, num_workers)


def training_set_batches(data: CIFAR10Data, batch_size: int, device: torch.device, cutout: bool = False,
                         seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training images in order, normalized, unaugmented or (`cutout`) with one CutOut square on each, placed
    by a generator of `seed`: what the model was asked to fit, to measure how well it does."""
    device = torch.device(device)
    transforms = BatchTransforms(data.mean, data.std, device, size=data.train_images.shape[1:3])
    generator = torch.Generator(device=device).manual_seed(seed)
    for i in range(0, len(data.train_labels), batch_size):
        x = torch.from_numpy(data.train_images[i:i + batch_size]).to(device).permute(0, 3, 1, 2)
        if cutout:
            x = transforms.cutout(x, generator=generator)
        yield transforms.normalize(x), torch.from_numpy(data.train_labels[i:i + batch_size]).to(device)


def make_batches(data: CIFAR10Data, batch_size: int, device: torch.device, config: TrainConfig = TrainConfig(),
                 num_workers: int | None = None):
    """(train, test) batches, augmented as `config` says: whole batches on the device (default on CUDA and the
    CPU: no worker processes compete with training for the cores), or a DataLoader of the albumentations pipeline."""
    device = torch.device(device)
    test = evaluation_batches(data, batch_size, device, config.on_device_data, num_workers)
    if _on_device(device, config.on_device_data):
        return DeviceBatches(data.train_images, data.train_labels, batch_size, True, data.mean, data.std,
                             device, config, config.seed), test
    return LoaderBatches(data.train_images, data.train_labels, train_transforms(data.mean, data.std, config),
                         batch_size, True, device, config.seed, num_workers), test
