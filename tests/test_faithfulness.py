"""Heatmap checks with known answers: a model that looks at one quadrant only, random heatmaps, exact ranks."""
import numpy as np
import pytest
import torch
from torch import nn

from PyTorch_Vision.faithfulness import (average_ranks, deletion_curves, impute, randomisation_check,
                                         rank_correlation, reinitialised)
from PyTorch_Vision.gradcam import GradCAM


class QuadrantNet(nn.Module):
    """Class 0's logit is the mean of a 1x1 convolution's (ReLU) features over the top-left quadrant, class 1's
    its negative: nothing outside that quadrant matters, and a zero (mean-colour) image is a 50:50 call."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.ReLU())
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., :16, :16] = 1
        self.register_buffer("mask", mask)
        self.masked = nn.Identity()  # the GradCAM target: the features as the decision sees them
        self.linear = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.fill_(0.5)
            self.linear.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))

    def forward(self, x):
        return self.linear(self.masked(self.features(x) * self.mask).mean((2, 3)) * 8)


def test_a_model_that_looks_at_one_quadrant_gets_its_cam_there_and_a_curve_that_falls_at_once():
    torch.manual_seed(0)
    model = QuadrantNet()
    images = torch.rand(8, 3, 32, 32) + 0.5
    classes = torch.zeros(8, dtype=torch.long)
    cams = GradCAM(model, model.masked)(images, classes)
    assert cams[:, :16, :16].sum() == pytest.approx(cams.sum().item()) and (cams[:, :16, :16] > 0).all()
    curves = deletion_curves(model, images, classes, cams, steps=8, generator=torch.Generator().manual_seed(0))
    assert curves.fractions.tolist() == pytest.approx([i / 8 for i in range(9)])
    assert (curves.cam[:, 0] > 0.95).all(), "the untouched images are class 0"
    torch.testing.assert_close(curves.cam[:, 2:], torch.full((8, 7), 0.5))  # quadrant (1/4 of pixels) gone at 2/8
    assert (curves.random[:, 2] > 0.6).all(), "random erasing of a quarter leaves most of the quadrant"
    assert (curves.deletion_gap > 0.1).all()


def test_random_heatmaps_score_about_zero_against_random_deletion():
    torch.manual_seed(0)
    model = QuadrantNet()
    images, classes = torch.rand(200, 3, 32, 32) + 0.5, torch.zeros(200, dtype=torch.long)
    noise = torch.rand(200, 32, 32, generator=torch.Generator().manual_seed(1))
    gap = deletion_curves(model, images, classes, noise, steps=10, generator=torch.Generator().manual_seed(2))
    assert abs(gap.deletion_gap.mean().item()) < 0.01 and gap.deletion_gap.std().item() > 0.001


def test_impute_keeps_kept_pixels_and_fills_the_rest():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    keep = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    keep[:, :, 1, 1] = False
    mean = impute(images, keep, "mean")
    assert mean[:, :, 1, 1].eq(0).all() and torch.equal(mean * keep, images * keep)
    blur = impute(images, keep, "blur", size=3)
    neighbours = (images[0, 0, :3, :3].sum() - images[0, 0, 1, 1]) / 8
    torch.testing.assert_close(blur[0, 0, 1, 1], neighbours, rtol=0, atol=1e-5)  # the 8 kept neighbours' mean
    assert torch.equal(blur * keep, images * keep) and torch.equal(images, torch.arange(96.).view(2, 3, 4, 4))
    with pytest.raises(ValueError, match="fill must be one of mean, blur"):
        impute(images, keep, "zero")


def test_ranks_and_rank_correlation_have_exact_known_values():
    assert average_ranks(np.array([3.0, 1.0, 2.0, 2.0])).tolist() == [3.0, 0.0, 1.5, 1.5]
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    r = rank_correlation(a, b)
    assert r[0] == pytest.approx(1.0) and torch.isnan(r[1]), "a constant map has no ranking"
    assert rank_correlation(a[:1], -b[:1])[0] == pytest.approx(-1.0)
    x, y = torch.tensor([[1.0, 2.0, 2.0, 5.0, 3.0]]), torch.tensor([[2.0, 1.0, 4.0, 3.0, 3.0]])
    # Spearman with ties = Pearson of average ranks: ranks x [0, 1.5, 1.5, 4, 3], y [1, 0, 4, 2.5, 2.5]
    rx, ry = np.array([0, 1.5, 1.5, 4, 3]), np.array([1, 0, 4, 2.5, 2.5])
    assert rank_correlation(x, y)[0] == pytest.approx(np.corrcoef(rx, ry)[0, 1])


class ChannelNet(nn.Module):
    """Trained: class 0's logit is the mean of the first input channel (a 1x1 convolution copies it to 4 features),
    so its GradCAM ranks pixels exactly as that channel; a re-initialised copy mixes the channels at random."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.features = nn.Identity()  # the GradCAM target
        self.linear = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, 0] = 1.0
            self.linear.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))

    def forward(self, x):
        return self.linear(self.features(torch.relu(self.conv(x))).mean((2, 3)))


def test_the_randomisation_check_compares_with_a_fresh_copy_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = ChannelNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, classes = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    trained = GradCAM(model, model.features)(images, classes)
    assert torch.allclose(rank_correlation(trained, images[:, 0]), torch.ones(4, dtype=torch.float64))
    fresh = reinitialised(model, seed=0)
    assert not torch.equal(fresh.conv.weight, model.conv.weight)
    r = randomisation_check(model, "features", images, classes, seed=0)
    torch.testing.assert_close(r, rank_correlation(trained, GradCAM(fresh, fresh.features)(images, classes)),
                               rtol=0, atol=1e-12)
    assert (r.abs() < 0.5).all(), "a re-initialised model's heatmaps rank the pixels otherwise"
    assert not torch.equal(r, randomisation_check(model, "features", images, classes, seed=1)), "the seed counts"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_reinitialising_leaves_every_random_generator_as_it_was(monkeypatch):
    """The check draws its copy from a seed of its own; the training code's generators, the GPU's included (which
    torch.manual_seed reseeds too), are as they were."""
    reseeded = []
    for name in ("manual_seed", "manual_seed_all"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, _n=name: reseeded.append(_n))
    torch.manual_seed(5)
    model = ChannelNet()
    reseeded.clear()
    state = torch.get_rng_state()
    first, again = reinitialised(model, seed=3), reinitialised(model, seed=3)
    assert reseeded == [] and torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.conv.weight, again.conv.weight)


@pytest.mark.slow
def test_measure_layers_ranks_layers_and_draws_the_curves(tmp_path):
    from PyTorch_Vision.faithfulness import faithfulness_markdown, measure_layers
    from PyTorch_Vision.models import ResNet18
    from PyTorch_Vision.plots import plot_deletion_curves

    torch.manual_seed(0)
    model = ResNet18().eval()
    images = torch.randn(4, 3, 32, 32)
    results = measure_layers(model, images, ("layer4.1", "layer3.1"), steps=4)
    assert [(r.layer, r.map_size) for r in results] == [("layer4.1", 4), ("layer3.1", 8)]
    assert all(r.deletion_gap == r.curves.deletion_gap.mean().item() and r.curves.cam.shape == (4, 5)
               for r in results)
    assert results[0].random_cam_gap == results[1].random_cam_gap, "one control for all layers"
    table = faithfulness_markdown(results)
    assert "| layer4.1 | 4x4 |" in table and "| layer3.1 | 8x8 |" in table
    fig = plot_deletion_curves(results, tmp_path / "deletion.png")
    assert len(fig.axes[0].lines) == 3 and (tmp_path / "deletion.png").stat().st_size > 0
    assert not model.training


def test_measure_layers_finds_the_layer_that_sees_what_the_model_uses():
    from PyTorch_Vision.faithfulness import measure_layers

    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32) + 0.5
    masked = measure_layers(QuadrantNet(), images, ("masked",), steps=8)[0]
    assert masked.map_size == 32 and masked.deletion_gap > 0.1, "the quadrant's pixels go first"
    assert abs(masked.random_cam_gap) < 0.05, "random heatmaps: about chance"


def test_the_best_layer_is_the_one_with_the_largest_deletion_gap():
    from PyTorch_Vision.faithfulness import LayerFaithfulness, best_layer

    results = [LayerFaithfulness(name, 4, None, gap, 0.0, 0.1)
               for name, gap in (("layer4.1", 0.05), ("layer3.1", 0.25), ("layer2.1", 0.2))]
    assert best_layer(results).layer == "layer3.1"


def test_measure_layers_computes_each_curve_once_and_the_random_ones_for_all_layers():
    """Forward passes of the model: 1 for the predictions, (steps + 1) for the random order and for the random
    heatmaps, per layer 1 for its map's size, 1 for GradCAM (the randomisation check reuses it; its re-initialised
    copy is another model) and (steps + 1) for its deletion curve; the random curve is the same for every layer."""
    from PyTorch_Vision.faithfulness import measure_layers

    torch.manual_seed(0)
    model, images, steps = QuadrantNet(), torch.rand(6, 3, 32, 32) + 0.5, 4
    calls = []
    model.register_forward_pre_hook(lambda m, inputs: calls.append(len(inputs[0])) if m is model else None)
    results = measure_layers(model, images, ("masked", "masked"), steps=steps, seed=3)
    assert len(calls) == 1 + 2 * (steps + 1) + 2 * (2 + steps + 1)
    first, second = results
    torch.testing.assert_close(first.curves.random, second.curves.random, rtol=0, atol=0)
    torch.testing.assert_close(first.curves.cam, second.curves.cam, rtol=0, atol=0)
    assert first.deletion_gap > first.random_cam_gap, "the masked region's heatmap beats random heatmaps"


def test_erasure_runs_in_the_precision_it_is_given():
    from PyTorch_Vision.faithfulness import erasure_curve, random_order

    torch.manual_seed(0)
    model, images = QuadrantNet(), torch.rand(8, 3, 32, 32) + 0.5
    seen = []
    model.features.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    order = random_order(8, 32 * 32, torch.Generator().manual_seed(0))
    classes = torch.zeros(8, dtype=torch.long)
    exact = erasure_curve(model, images, classes, order, steps=4, precision="fp32")
    low = erasure_curve(model, images, classes, order, steps=4, precision="bf16")
    assert set(seen) == {torch.float32, torch.bfloat16}
    assert (low - exact).abs().max() < 0.02, "bf16 probabilities stay close to fp32's"
