import pickle
import shutil
import tarfile
import urllib.error

import numpy as np
import pytest

from conftest import CIFAR10_ARCHIVE
from PyTorch_Vision.data import DataError, channel_stats, load_cifar10


def test_image_folder_round_trip(image_folder):
    root, original = image_folder
    data = load_cifar10(root, download=False)
    classes = sorted(set(original.classes[i] for i in original.train_labels))
    assert data.classes == classes
    assert data.train_images.shape == (60, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (30, 32, 32, 3)
    # PNG is lossless: the decoded pixels are the written ones, grouped by class folder
    decoded = sorted(map(bytes, data.train_images))
    assert decoded == sorted(map(bytes, original.train_images))
    assert [data.classes[y] for y in data.train_labels] == sorted(original.classes[y] for y in original.train_labels)
    np.testing.assert_allclose(data.mean, channel_stats(original.train_images)[0])
    assert "ImageFolder" in data.source


def test_limits_keep_a_fixed_subset(image_folder):
    root, _ = image_folder
    a = load_cifar10(root, limit_train=20, limit_test=10)
    b = load_cifar10(root, limit_train=20, limit_test=10)
    assert len(a.train_labels) == 20 and len(a.test_labels) == 10
    assert np.array_equal(a.train_images, b.train_images)


def test_python_batches_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(d))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a", "b", "c", "d"]}))
    data = load_cifar10(tmp_path, download=False)
    assert data.train_images.shape == (20, 32, 32, 3) and data.classes == ["a", "b", "c", "d"]
    assert np.array_equal(data.test_images[0].transpose(2, 0, 1).reshape(-1),
                          pickle.loads((folder / "test_batch").read_bytes())["data"][0])
    (folder / "data_batch_3").write_bytes(b"broken")
    with pytest.raises(DataError, match="not a complete cifar-10-batches-py"):
        load_cifar10(tmp_path)


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 found"):
        load_cifar10(tmp_path / "nowhere", download=False)
    with pytest.raises(DataError, match="no CIFAR-10 found"):
        load_cifar10(tmp_path, download=False)
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no test/ folder"):
        load_cifar10(tmp_path)
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_cifar10(tmp_path)


def test_class_folders_must_match(image_folder):
    root, _ = image_folder
    shutil.rmtree(next((root / "test").iterdir()))
    with pytest.raises(DataError, match="train and test class folders differ"):
        load_cifar10(root)


def test_undecodable_image_is_named(image_folder):
    root, _ = image_folder
    bad = next((root / "train").iterdir()) / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot decode image .*broken.png"):
        load_cifar10(root)


def test_wrong_size_is_refused(image_folder):
    from PIL import Image

    root, _ = image_folder
    Image.new("RGB", (64, 48)).save(next((root / "test").iterdir()) / "big.png")
    with pytest.raises(DataError, match="big.png is 64x48.*32x32"):
        load_cifar10(root)


def test_no_network_points_to_data_dir(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="could not download.*--data-dir"):
        load_cifar10(tmp_path / "data")


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_ARCHIVE.exists(), reason="no offline CIFAR-10 copy (S11_TEST_CIFAR10_ARCHIVE)")
def test_offline_cifar10_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    with tarfile.open(CIFAR10_ARCHIVE) as tar:
        tar.extractall(root, filter="data")
    data = load_cifar10(root / "cifar10-jpeg", download=False)
    assert data.train_images.shape == (50000, 32, 32, 3) and data.test_images.shape == (10000, 32, 32, 3)
    assert data.classes[:3] == ["airplane", "automobile", "bird"]
    assert np.bincount(data.train_labels).tolist() == [5000] * 10
    np.testing.assert_allclose(data.mean, (0.491, 0.482, 0.447), atol=0.005)
