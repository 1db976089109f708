"""benchmarks/copy_penalty.py: originals paired with their files in the copy, read from a folder or the archive,
and the paired differences of its summary computed as stated."""
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from copy_penalty import load_pairs, summary  # noqa: E402


@pytest.fixture
def originals_and_copy(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    classes = np.array(["cat", "dog"])
    files, images, labels = {}, {}, {}
    for split, n in (("train", 6), ("test", 4)):
        images[split] = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels[split] = np.arange(n) % 2
        files[split] = np.array([f"{split}/{classes[y]}/{i:04d}.png" for i, y in enumerate(labels[split])])
        for name, image in zip(files[split], images[split]):
            path = tmp_path / "cifar10-jpeg" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(255 - image).save(path)  # a "copy" that differs from its original
    npz = tmp_path / "originals.npz"
    np.savez(npz, train_images=images["train"], train_labels=labels["train"], train_copy_files=files["train"],
             test_images=images["test"], test_labels=labels["test"], test_copy_files=files["test"], classes=classes)
    archive = tmp_path / "copy.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar10-jpeg", arcname="cifar10-jpeg")
    return npz, tmp_path / "cifar10-jpeg", archive, images


def test_each_original_is_paired_with_its_copy(originals_and_copy):
    npz, folder, archive, images = originals_and_copy
    for copy in (folder, archive):
        pairs = load_pairs(npz, copy)
        assert np.array_equal(pairs.train_original, images["train"])
        assert np.array_equal(pairs.train_copy, 255 - images["train"]), "the copy's file, in the originals' order"
        assert np.array_equal(pairs.test_copy, 255 - images["test"])
        assert pairs.classes == ["cat", "dog"]


def test_a_copy_file_under_another_class_is_refused(originals_and_copy):
    npz, folder, _, _ = originals_and_copy
    z = dict(np.load(npz))
    z["train_labels"] = 1 - z["train_labels"]
    np.savez(npz, **z)
    with pytest.raises(SystemExit, match="does not pair"):
        load_pairs(npz, folder)


def test_summary_states_the_paired_differences():
    runs = [{"trained_on": src, "seed": s, "test_accuracy": {"original": o, "copy": c}}
            for src, s, o, c in (("original", 0, 60.0, 58.0), ("original", 1, 62.0, 61.0),
                                 ("copy", 0, 61.0, 60.0), ("copy", 1, 64.0, 64.0))]
    text = summary(runs)
    assert "| original | 2 | 61.00 ± 1.41 | 59.50 ± 2.12 | -1.50 ± 0.71 |" in text  # copy test - original test
    assert "| copy | 2 | 62.50 ± 2.12 | 62.00 ± 2.83 | -0.50 ± 0.71 |" in text
    # copy-trained minus original-trained, same seed: originals +1, +2; copies +2, +3
    assert "on original test images 1.50 ± 0.71; on copy test images 2.50 ± 0.71 points" in text
