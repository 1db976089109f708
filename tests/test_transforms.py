"""The augmentation contract, checked statistically on both implementations: the albumentations pipeline
(reference, CPU path) and the batched tensor version (device path)."""
import numpy as np
import pytest
import torch

from PyTorch_Vision import transforms as T
from PyTorch_Vision.transforms import Augmentation, batch_train_augment, mean_colour, train_transforms

MEAN, STD = (0.1, 0.1, 0.1), (0.3, 0.25, 0.2)
FILL = mean_colour(MEAN)  # (26, 26, 26)
N = 1500


def coded_image() -> np.ndarray:
    """R encodes the row, G the column, B marks 'from the image' (255) as opposed to fill (26)."""
    r, c = np.mgrid[0:32, 0:32]
    return np.stack([10 + 7 * r, 10 + 7 * c, np.full_like(r, 255)], -1).astype(np.uint8)


def augment(kind: str, flip: bool, cutout: bool = True, **variant) -> np.ndarray:
    """N augmented copies of the coded image, normalization undone -> (N,32,32,3) uint8. `variant`: the
    Augmentation switches cutout_p (default here 1: a hole in every image), cutout_anywhere, padding."""
    image = coded_image()
    aug = Augmentation(flip=flip, cutout=cutout, **{"cutout_p": 1.0, **variant})
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


def test_no_hole_when_cutout_is_switched_off(kind):
    for s in augment(kind, flip=True, cutout=False)[:300]:
        _, _, _, inside, from_image = decode(s)
        assert np.array_equal(~from_image, ~inside), "only the padding may carry the fill colour"


def test_train_output_is_normalized_with_the_given_statistics():
    t = train_transforms(MEAN, STD, Augmentation(flip=False, cutout=False))
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


# ---- the variants of the recipe search, both implementations held to the same distribution ----

def test_cutout_on_a_share_of_the_images(kind):
    samples = augment(kind, flip=False, cutout_p=0.5, padding="reflect")  # reflect: only the hole has B != 255
    holed = np.array([(s[..., 2] != 255).any() for s in samples])
    assert abs(holed.mean() - 0.5) < 4 * np.sqrt(0.25 / N)
    assert all((s[..., 2] != 255).sum() == 256 for s in samples[holed]), "a hole is a whole 16x16 square"


def test_cutout_anywhere_centres_the_hole_anywhere_and_clips_it(kind):
    """DeVries & Taylor: centre c uniform over 0..31 per axis, hole [c-8, c+8) clipped to the image: a side is
    16 for 17 of the 32 centres, else 8..15; the hole touches every border sometimes."""
    samples = augment(kind, flip=False, cutout_anywhere=True, padding="reflect")
    heights, widths, touches = [], [], set()
    for s in samples:
        ys, xs = np.nonzero(s[..., 2] != 255)
        heights.append(ys.max() - ys.min() + 1)
        widths.append(xs.max() - xs.min() + 1)
        assert len(ys) == heights[-1] * widths[-1], "the hole is one rectangle"
        touches |= {side for side, hit in (("top", ys.min() == 0), ("bottom", ys.max() == 31),
                                           ("left", xs.min() == 0), ("right", xs.max() == 31)) if hit}
    heights, widths = np.array(heights), np.array(widths)
    assert heights.min() == 8 and widths.min() == 8 and heights.max() == 16 and widths.max() == 16
    full = ((heights == 16) & (widths == 16)).mean()
    p = (17 / 32) ** 2
    assert abs(full - p) < 4 * np.sqrt(p * (1 - p) / N)
    assert abs(heights.mean() - (17 * 16 + 2 * sum(range(8, 16))) / 32) < 0.3
    assert touches == {"top", "bottom", "left", "right"}


def test_reflected_padding_mirrors_the_image_and_keeps_all_81_offsets(kind):
    samples = augment(kind, flip=False, cutout=False, padding="reflect")
    counts = np.zeros((9, 9))
    for s in samples:
        assert (s[..., 2] == 255).all(), "no fill colour anywhere: the border is the image itself"
        rows, cols = (s[..., 0].astype(int) - 10) // 7, (s[..., 1].astype(int) - 10) // 7
        dy, dx = rows[4, 16], cols[16, 4]  # output row 4 is source row dy (no reflection reaches it)
        reflect = lambda i: abs(i) if i < 0 else (62 - i if i > 31 else i)  # noqa: E731  cv2 BORDER_REFLECT_101
        assert [rows[i, 16] for i in range(32)] == [reflect(i + dy - 4) for i in range(32)]
        assert [cols[16, j] for j in range(32)] == [reflect(j + dx - 4) for j in range(32)]
        counts[dy, dx] += 1
    expected = N / 81
    assert (counts > 0).all() and ((counts - expected) ** 2 / expected).sum() < 140


def test_bad_variants_are_refused():
    with pytest.raises(ValueError, match="cutout_p must be a number from 0 to 1"):
        Augmentation(cutout_p=1.5)
    with pytest.raises(ValueError, match="padding must be one of mean, reflect"):
        Augmentation(padding="zero")
