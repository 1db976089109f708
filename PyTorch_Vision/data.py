"""CIFAR-10 in memory as uint8 arrays: read from an ImageFolder copy (`train/<class>/*`, `test/<class>/*`),
torchvision's `cifar-10-batches-py` folder, or torchvision's download; or a small synthetic stand-in for tests.
The batches training and evaluation draw from it are made in batches.py."""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """Load CIFAR-10 from `data_dir`: ImageFolder layout, a cifar-10-batches-py folder, or download it there.

    Everything is decoded once into memory as uint8. `limit_*` keep a fixed random subset (for quick runs).
    """
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
