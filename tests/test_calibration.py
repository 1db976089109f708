"""Calibration against airbench94: the export that lets the `airbench` package train on the offline copy (the
files hold exactly the images and labels, in the layout its loader reads), and the CPU path of our own port."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from calibration import export  # noqa: E402


def test_export_writes_what_airbench_loads(tiny_data, tmp_path):
    folder = export(tiny_data, tmp_path)
    assert folder == tmp_path / "cifar10"
    for split, images, labels in (("train", tiny_data.train_images, tiny_data.train_labels),
                                  ("test", tiny_data.test_images, tiny_data.test_labels)):
        data = torch.load(folder / f"{split}.pt", weights_only=True)  # as airbench's torch.load reads it
        assert set(data) == {"images", "labels", "classes"} and data["classes"] == tiny_data.classes
        assert data["images"].dtype == torch.uint8 and data["images"].shape == (len(labels), 32, 32, 3)
        assert torch.equal(data["images"], torch.from_numpy(images)), "pixels exactly as decoded"
        assert data["labels"].dtype == torch.int64 and torch.equal(data["labels"], torch.from_numpy(labels))
        # airbench: (images.half() / 255).permute(0, 3, 1, 2), i.e. NCHW in [0, 1]
        nchw = (data["images"].half() / 255).permute(0, 3, 1, 2)
        assert nchw.shape == (len(labels), 3, 32, 32) and 0 <= nchw.min() and nchw.max() <= 1


@pytest.mark.slow
def test_the_cpu_path_records_each_seed_and_goes_on_from_them(image_folder, tmp_path, monkeypatch, capsys):
    import argparse
    import json

    import airbench94
    import calibration

    root, data = image_folder
    monkeypatch.setitem(airbench94.hyp, "batch_size", 16)
    monkeypatch.setitem(airbench94.hyp, "whiten_images", 16)
    monkeypatch.setattr(calibration, "RESULT", tmp_path / "calibration.json")
    args = argparse.Namespace(data_dir=str(root), seeds=1, precision="fp32", originals=None)
    calibration.cpu(args)
    record = json.loads((tmp_path / "calibration.json").read_text())["airbench94_cpu_fp32"]
    assert [s["seed"] for s in record["seeds"]] == [0] and record["published"] == 94.01
    assert record["D"] == pytest.approx(94.01 - record["seeds"][0]["tta_accuracy"], abs=1e-3)
    assert 0 <= record["seeds"][0]["tta_accuracy"] <= 100 and record["measured_std"] is None
    capsys.readouterr()
    calibration.cpu(argparse.Namespace(**{**vars(args), "seeds": 2}))
    assert "seed 0 epoch" not in capsys.readouterr().out, "a recorded seed is not trained again"
    record = json.loads((tmp_path / "calibration.json").read_text())["airbench94_cpu_fp32"]
    accs = [s["tta_accuracy"] for s in record["seeds"]]
    assert [s["seed"] for s in record["seeds"]] == [0, 1]
    assert record["measured_mean"] == pytest.approx(sum(accs) / 2, abs=1e-3)
