"""The augmentation contract, checked statistically on both implementations: the albumentations pipeline
(reference, CPU path) and the batched tensor version (device path)."""
import numpy as np
import pytest
import torch

from PyTorch_Vision import transforms as T
from PyTorch_Vision.config import TrainConfig
from PyTorch_Vision.transforms import batch_train_augment, mean_colour, train_transforms

MEAN, STD = (0.1, 0.1, 0.1), (0.3, 0.25, 0.2)
FILL = mean_colour(MEAN)  # (26, 26, 26)
N = 1500


def coded_image() -> np.ndarray:
    """R encodes the row, G the column, B marks 'from the image' (255) as opposed to fill (26)."""
    r, c = np.mgrid[0:32, 0:32]
    return np.stack([10 + 7 * r, 10 + 7 * c, np.full_like(r, 255)], -1).astype(np.uint8)


def augment(kind: str, flip: bool, cutout_p: float = 1.0) -> np.ndarray:
    """N augmented copies of the coded image, normalization undone -> (N,32,32,3) uint8; by default CutOut on every
    image."""
    image = coded_image()
    aug = TrainConfig(flip=flip, cutout_p=cutout_p)
    if kind == "albumentations":
        t = train_transforms(MEAN, STD, aug)
        t.set_random_seed(0)
        out = torch.stack([t(image=image)["image"] for _ in range(N)])
    else:
        batch = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(N, 1, 1, 1)
        out = batch_train_augment(batch, MEAN, STD, aug, torch.Generator().manual_seed(0))
    pixels = out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    return (pixels * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def decode(sample: np.ndarray):
    """-> (dy, dx, flipped, hole (32,32) bool) for one augmented coded image."""
    from_image = sample[..., 2] == 255
    i, j = np.argwhere(from_image)[0]
    rows = (sample[..., 0].astype(int) - 10) // 7
    cols = (sample[..., 1].astype(int) - 10) // 7
    dy = rows[i, j] - i + 4
    flipped = bool(from_image[i].sum() > 1 and np.diff(cols[i][from_image[i]]).max() < 0)
    dx = (31 - cols[i, j]) - j + 4 if flipped else cols[i, j] - j + 4
    yy, xx = np.mgrid[0:32, 0:32]
    inside = (yy + dy - 4 >= 0) & (yy + dy - 4 < 32) & (xx + dx - 4 >= 0) & (xx + dx - 4 < 32)
    return dy, dx, flipped, inside, from_image


@pytest.fixture(scope="module", params=["albumentations", "batch"])
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def flipped_samples(kind):
    return augment(kind, flip=True)


def test_all_81_crop_offsets_occur_uniformly(flipped_samples):
    offsets = [decode(s)[:2] for s in flipped_samples]
    counts = np.zeros((9, 9))
    for dy, dx in offsets:
        counts[dy, dx] += 1
    assert (counts > 0).all(), "every one of the 81 crop offsets must be reachable"
    expected = N / 81
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 140  # 80 degrees of freedom: p < 1e-4 beyond this


def test_flip_rate_is_one_half(flipped_samples):
    rate = np.mean([decode(s)[2] for s in flipped_samples])
    assert abs(rate - 0.5) < 4 * np.sqrt(0.25 / N)


def test_exactly_one_16x16_hole_filled_with_the_mean_colour(flipped_samples):
    corners = []
    for s in flipped_samples:
        dy, dx, _, inside, from_image = decode(s)
        fill = ~from_image
        assert (s[fill] == FILL).all(), "padding and hole must carry the mean colour"
        squares = [(y, x) for y in range(17) for x in range(17)
                   if np.array_equal(fill, ~inside | square(y, x))]
        assert squares, "fill pixels must be the padding plus one 16x16 square inside the crop"
        if len(squares) == 1:
            corners.append(squares[0])
    corners = np.array(corners)
    assert len(corners) > N // 3
    assert abs(corners.mean() - 8) < 0.6  # hole corner uniform over 0..16 in both axes


def square(y: int, x: int) -> np.ndarray:
    m = np.zeros((32, 32), bool)
    m[y:y + 16, x:x + 16] = True
    return m


def test_no_flip_when_switched_off(kind):
    samples = augment(kind, flip=False)[:300]
    assert not any(decode(s)[2] for s in samples)


def test_no_cutout_at_p_0(kind):
    for s in augment(kind, flip=True, cutout_p=0)[:300]:
        _, _, _, inside, from_image = decode(s)
        assert np.array_equal(~from_image, ~inside), "only the padding may carry the fill colour"


def test_train_output_is_normalized_with_the_given_statistics():
    t = train_transforms(MEAN, STD, TrainConfig(flip=False, cutout_p=0))
    t.set_random_seed(0)
    out = t(image=coded_image())["image"]
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    pixels = (out * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)) * 255
    torch.testing.assert_close(pixels, pixels.round(), atol=2e-3, rtol=0)  # whole 0..255 values: (x/255 - mean)/std
    assert set(pixels[2].round().unique().tolist()) <= {255.0, float(FILL[2])}


def test_batch_normalize_equals_albumentations_normalize():
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    reference = torch.stack([T.test_transforms(MEAN, STD)(image=image)["image"] for image in images])
    batched = T.batch_normalize(torch.from_numpy(images).permute(0, 3, 1, 2), MEAN, STD)
    assert batched.dtype == torch.float32
    torch.testing.assert_close(batched, reference, atol=1e-6, rtol=1e-6)


def test_test_pipeline_only_normalizes():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = T.test_transforms(MEAN, STD)(image=image)["image"]
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN).view(3, 1, 1)) \
        / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mean,std", [((0.5, 0.5), (0.2, 0.2, 0.2)), ((125, 120, 110), (60, 60, 60))])
def test_bad_statistics_are_refused(mean, std):
    with pytest.raises(ValueError, match="mean"):
        train_transforms(mean, std)


def test_cutout_on_a_fraction_of_the_images(kind):
    holes = []
    for s in augment(kind, flip=False, cutout_p=0.5):
        _, _, _, inside, from_image = decode(s)
        holes.append((inside & ~from_image).any())  # the fill colour where the image is, not only the padding
    assert abs(np.mean(holes) - 0.5) < 4 * np.sqrt(0.25 / N)


def test_a_fraction_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match="cutout_p must be a number from 0 to 1, got 1.5"):
        TrainConfig(cutout_p=1.5)
