"""Property: whatever arguments and data folder a user gives the command line, it ends with exit 0, or with a
non-zero exit and a short message: never a Python traceback, and nothing on disk changed. Drawn: CLI options
(good and bad values) and small data layouts, broken ones included. Bounded: RUNS and MISTAKES examples,
derandomized so that CI sees the same ones."""
import contextlib
import io
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

import PyTorch_Vision.__main__ as cli
from conftest import write_image_folder
from PyTorch_Vision.data import synthetic_cifar10

RUNS, MISTAKES = 30, 150  # examples of each test; their time: docs/FAULTS.md
pytestmark = pytest.mark.slow  # a minute or more each


class SmallNet(nn.Module):
    """Stands in for ResNet18 (same `layer4.1` GradCAM target) so that each example trains in well under a second."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.layer4 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Sequential(nn.BatchNorm2d(8), nn.ReLU()))
        self.linear = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.linear(self.layer4(x).mean((2, 3)))


def make_layout(root: Path, kind: str) -> Path:
    """A data folder of the given kind under root; returns what --data-dir should say."""
    data = synthetic_cifar10(n_train=40, n_test=40, seed=0)  # 3 classes kept: about 12 images each
    classes = data.classes[:3]
    keep_train, keep_test = data.train_labels < 3, data.test_labels < 3
    folder = root / "data"
    if kind == "missing":
        return root / "nowhere"
    if kind == "a file":
        (root / "file").write_text("not a folder")
        return root / "file"
    if kind == "empty folder":
        folder.mkdir()
        return folder
    if kind == "corrupt batches":
        batches = folder / "cifar-10-batches-py"
        batches.mkdir(parents=True)
        (batches / "batches.meta").write_bytes(b"\x80\x04 not a pickle")
        (batches / "data_batch_1").write_bytes(pickle.dumps({"nothing": 1}))
        return folder
    write_image_folder(folder, data.train_images[keep_train], data.train_labels[keep_train], classes, "train")
    write_image_folder(folder, data.test_images[keep_test], data.test_labels[keep_test], classes, "test")
    first = next((folder / "train" / classes[0]).iterdir())
    if kind == "no test split":
        for f in (folder / "test").rglob("*.png"):
            f.unlink()
        for d in (folder / "test").iterdir():
            d.rmdir()
        (folder / "test").rmdir()
    elif kind == "zero-byte image":
        first.write_bytes(b"")
    elif kind == "truncated image":
        first.write_bytes(first.read_bytes()[:40])
    elif kind == "wrong size image":
        from PIL import Image
        Image.new("RGB", (40, 30)).save(first)
    elif kind == "text as image":
        first.write_text("hello")
    elif kind == "empty class folder":
        (folder / "train" / "extra").mkdir()
    elif kind == "one colour images":
        from PIL import Image
        for f in folder.rglob("*.png"):
            Image.new("RGB", (32, 32), (90, 90, 90)).save(f)
    return folder


LAYOUTS = ["good", "good", "good", "missing", "a file", "empty folder", "corrupt batches", "no test split",
           "zero-byte image", "truncated image", "wrong size image", "text as image", "empty class folder",
           "one colour images"]
OPTIONS = {  # option: (values a user may mean, values that must be refused or fail cleanly)
    "--epochs": (["1", "2"], ["0", "-1", "abc", "1.5"]),
    "--max-lr": (["0.01", "0.4", "1e9"], ["0", "nan", "-1", "inf"]),
    "--min-warmup-steps": (["1", "100"], ["0", "2.5"]),
    "--weight-decay": (["0", "5e-4"], ["-1", "abc"]),
    "--label-smoothing": (["0.1", "0"], ["1", "-0.5"]),
    "--limit-train": (["12", "100"], ["1", "0"]),
    "--limit-test": (["3"], ["0"]),
    "--device": (["cpu"], ["cuda", "cuda:3", "tpu9", "mps", ""]),
    "--precision": (["auto", "fp32", "bf16", "fp16"], ["half"]),
    "--seed": (["0", "-3"], ["seven"]),
    "--progress": (["none", "epoch", "bar"], ["loud"]),
    "--cutout-p": (["0.5", "1", "0"], ["2", "-0.1", "x"]),
    "--anneal": (["cos", "linear"], ["step"]),
    "--max-momentum": (["0.9", "0"], ["1", "1.5"]),
    "--bn-stats-images": (["0", "64"], ["-1", "x"]),
}
OUTS = ["fresh", "fresh", "existing file", "finished run"]


@st.composite
def meant_calls(draw):
    """Values a user may mean, on any layout (a broken one too): these load data, and most of them train."""
    options = draw(st.dictionaries(st.sampled_from(sorted(OPTIONS)), st.none(), max_size=5))
    args = ["--batch-size", draw(st.sampled_from(["4", "8"]))]
    for name in options:
        args += [name, draw(st.sampled_from(OPTIONS[name][0]))]
    args += draw(st.lists(st.sampled_from(["--no-flip", "--no-channels-last"]), unique=True, max_size=2))
    out = draw(st.sampled_from(OUTS))
    if out == "finished run":
        args.append("--resume")
    return draw(st.sampled_from(["good"] * len(LAYOUTS) + LAYOUTS)), out, args


@st.composite
def mistaken_calls(draw):
    """A meant call with one mistake: a bad value, a stray --resume, or a broken layout. Refused before training,
    so these are cheap and drawn many times."""
    layout, out, args = draw(meant_calls())
    mistake = draw(st.sampled_from(["value"] * 3 + ["resume", "layout"]))
    if mistake == "value":
        name = draw(st.sampled_from(sorted(OPTIONS) + ["--batch-size"]))
        bad = OPTIONS[name][1] if name in OPTIONS else ["0", "x", "100000"]
        args += [name, draw(st.sampled_from(bad))]
    elif mistake == "resume" and "--resume" not in args:
        args.append("--resume")
    else:
        layout = draw(st.sampled_from(LAYOUTS[1:]))
    return layout, out, args


@pytest.fixture
def small_cli(monkeypatch):
    monkeypatch.setattr(cli, "ResNet18", SmallNet)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on CI and on Colab's CPU runtime
    monkeypatch.setattr("torchvision.datasets.CIFAR10", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return code, err.getvalue()


def check_call(call) -> None:
    layout, out_kind, args = call
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data_dir = make_layout(root, layout)
        out = root / "run"
        if out_kind == "existing file":
            out.write_text("a file")
        elif out_kind == "finished run":
            assert run(["train", "--data-dir", str(make_layout(root / "other", "good")), "--epochs", "1",
                        "--batch-size", "4", "--out", str(out), "--progress", "none"])[0] == 0
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        code, err = run(["train", "--data-dir", str(data_dir), "--out", str(out), *args])
        event(f"exit {code}")  # --hypothesis-show-statistics: how many examples trained, how many were refused
        assert "Traceback" not in err
        if code != 0:
            lines = err.strip().splitlines()
            if code == 2:  # argparse: its usage, then one error line
                assert lines[0].startswith("usage:") and ": error: " in lines[-1], err
            else:
                assert len(lines) == 1 and lines[0].startswith(("error: ", "interrupted: ")), err
            assert all(p.read_bytes() == b for p, b in before.items()), "a refused call changes nothing on disk"


SLOW = dict(deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@settings(max_examples=RUNS, **SLOW)
@given(call=meant_calls())
def test_meant_calls_train_or_refuse_a_broken_folder_in_one_line(small_cli, call):
    check_call(call)


@settings(max_examples=MISTAKES, **SLOW)
@given(call=mistaken_calls())
def test_mistaken_calls_end_in_one_clear_line(small_cli, call):
    check_call(call)
