"""Our airbench94 port (benchmarks/airbench94.py) against what its paper states: the network's shape and size,
the whitening layer, the lookahead update, the views of test-time augmentation, and a short training run."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import airbench94 as ab  # noqa: E402


def test_the_network_has_airbench94s_shape_and_size():
    net = ab.make_net()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # whitening 24x3x2x2 + 24; convs 24->64->64, 64->256->256, 256->256->256 (3x3, no bias); 6 BatchNorms
    # (scale and bias); linear 256->10 without bias
    convs = 9 * (24 * 64 + 64 * 64 + 64 * 256 + 256 * 256 + 2 * 256 * 256)
    norms = 2 * 2 * (64 + 256 + 256)
    assert sum(p.numel() for p in net.parameters()) == 24 * 12 + 24 + convs + norms + 2560 == 1_972_792
    frozen = [p.numel() for p in net.parameters() if not p.requires_grad]
    assert sum(frozen) == 288 + norms // 2, "the whitening weights and the BatchNorm scales do not learn"
    first = net[2].conv1.weight
    torch.testing.assert_close(first[:24, :, 1, 1], torch.eye(24))  # the identity part of the initialisation


def test_whitening_decorrelates_the_patches_it_was_fitted_to():
    torch.manual_seed(0)
    mixing = torch.randn(3, 3)
    images = torch.einsum("ij,njhw->nihw", mixing, torch.randn(64, 3, 8, 8)) + 0.3  # correlated channels
    conv = nn.Conv2d(3, 24, 2, bias=False)
    ab.init_whitening(conv, images, eps=0.0)
    out = conv(images).permute(0, 2, 3, 1).reshape(-1, 24).double()
    moment = out[:, :12].T @ out[:, :12] / len(out)
    torch.testing.assert_close(moment, torch.eye(12, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])
    patches = ab.patches(images)
    eigenvalues = torch.linalg.eigvalsh(patches.double().T @ patches.double() / len(patches)).flip(0)
    ab.init_whitening(conv, images, eps=1.0)  # eps shrinks each direction by eigenvalue / (eigenvalue + eps)
    out = conv(images).permute(0, 2, 3, 1).reshape(-1, 24).double()
    torch.testing.assert_close((out[:, :12] ** 2).mean(0), eigenvalues / (eigenvalues + 1), atol=1e-4, rtol=1e-4)


def test_lookahead_moves_the_average_toward_the_weights_and_copies_it_back():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    lookahead = ab.Lookahead(net)
    with torch.no_grad():
        net[0].weight.fill_(3.0)
    lookahead.update(net, decay=0.75)  # 0.75 * 1 + 0.25 * 3
    assert torch.equal(net[0].weight, torch.full((2, 2), 1.5)) and torch.equal(lookahead.average["0.weight"],
                                                                               torch.full((2, 2), 1.5))
    with torch.no_grad():
        net[0].weight.fill_(9.0)
    lookahead.update(net, decay=1.0)  # decay 1: the network goes back to the average
    assert torch.equal(net[0].weight, torch.full((2, 2), 1.5))
    assert net[1].num_batches_tracked.dtype == torch.long and lookahead.average["1.num_batches_tracked"] == 0


def test_tta_level_2_averages_the_mirror_and_the_one_pixel_moves():
    seen = []

    class Record(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return x.mean((1, 2, 3)).unsqueeze(1).repeat(1, 10)

    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    ab.tta_logits(Record(), x, level=2)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :32, :32], padded[..., 2:, 2:]
    views = [x, x.flip(-1), up_left, up_left.flip(-1), down_right, down_right.flip(-1)]
    assert len(seen) == 6 and all(torch.equal(a, b) for a, b in zip(seen, views))
    assert torch.equal(up_left[..., 1:, 1:], x[..., :31, :31]) and torch.equal(down_right[..., :31, :31], x[..., 1:, 1:])
    seen.clear()
    assert torch.equal(ab.tta_logits(Record(), x, level=0), Record()(x)) and len(seen) == 2


def test_the_lr_rises_to_its_peak_at_23_percent_and_ends_at_7_percent():
    steps = 100
    values = [ab.triangle(i, steps) for i in range(steps + 1)]
    assert values[0] == pytest.approx(0.2) and values[23] == pytest.approx(1.0) and values[-1] == pytest.approx(0.07)
    assert max(values) == pytest.approx(1.0) and values.index(max(values)) == 23


@pytest.mark.slow
def test_a_short_run_learns_a_separable_task(monkeypatch):
    monkeypatch.setitem(ab.hyp, "batch_size", 64)
    monkeypatch.setitem(ab.hyp, "whiten_images", 64)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (512,), generator=g)
    colours = torch.randint(0, 256, (10, 3), generator=g)
    images = (colours[labels].view(-1, 1, 1, 3) + torch.randint(-20, 21, (512, 32, 32, 3), generator=g)).clamp(0, 255)
    images = images.to(torch.uint8)
    _, result = ab.run(images[:384], labels[:384], images[384:], labels[384:], seed=0, log=lambda line: None)
    assert result.tta_accuracy > 80 and result.accuracy > 80, result
