"""Tests of decoding, the batched training augmentation, the test transform and the loaders.

The batched augmentation is checked against plain per-sample implementations written below
(a padded copy and a slice for pad + crop, ``flip`` for the mirror, Zhong et al.'s sequential
retry loop for random erasing): exactly where the draws are fixed, and statistically (rates
within 4 standard errors, chi-square and two-sample KS tests at alpha = 1e-3, fixed seeds)
for the random draws.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats

from canlib.data.loader import ImageDataset, build_test_loader, build_train_loader
from canlib.data.sampling import PKSampler
from canlib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainAugment,
    TransformConfig,
    box_mask,
    build_test_transform,
    decode_image,
    draw_erasing_boxes,
    flip_pad_crop,
    normalize,
    resize,
    to_float,
)
from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError

SMALL = {"height": 16, "width": 8}
# No randomness: every random step switched off.
PLAIN = TransformConfig(**SMALL, flip_p=0.0, pad=0, erasing_p=0.0)
ALPHA = 1e-3


def _constant(rgb: tuple[int, int, int], height: int = 16, width: int = 8) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, height, width).clone()


def _ramp(height: int = 16, width: int = 8) -> torch.Tensor:
    """Asymmetric image: column j has value 10 * j in every channel and row."""
    row = torch.arange(width, dtype=torch.uint8) * 10
    return row.expand(3, height, width).clone()


def _images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=generator)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _augment_one(cfg: TransformConfig, image: torch.Tensor, seed: int) -> torch.Tensor:
    return TrainAugment(cfg)(image.unsqueeze(0), _gen(seed))[0]


# --- plain per-sample references ---------------------------------------------------------


def reference_pad_crop(image: torch.Tensor, pad: int, top: int, left: int) -> torch.Tensor:
    """Zero-pad a copy, then slice the original size at (top, left)."""
    height, width = image.shape[-2:]
    padded = F.pad(image, (pad, pad, pad, pad), value=0.0)
    return padded[..., top : top + height, left : left + width]


def reference_erasing_box(height, width, generator, *, p, scale, ratio, attempts=100):
    """Zhong et al.'s loop, one Python float at a time: the box (top, left, h, w) or None."""

    def uniform(low, high):
        return low + (high - low) * float(torch.rand((), generator=generator))

    if float(torch.rand((), generator=generator)) >= p:
        return None
    for _ in range(attempts):
        area = uniform(*scale) * height * width
        aspect = uniform(*ratio)
        box_h, box_w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        fits = 0 < box_h < height and 0 < box_w < width
        if fits and scale[0] <= box_h * box_w / (height * width) <= scale[1]:
            top = int(torch.randint(0, height - box_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - box_w + 1, (), generator=generator))
            return top, left, box_h, box_w
    return None


# --- normalisation and resizing ---------------------------------------------------------

# (c / 255 - mean) / std, worked out by hand for (200, 100, 50):
# R: (0.784314 - 0.485) / 0.229 = 1.307048
# G: (0.392157 - 0.456) / 0.224 = -0.285014
# B: (0.196078 - 0.406) / 0.225 = -0.932985
EXPECTED_200_100_50 = (1.307048, -0.285014, -0.932985)


def test_test_transform_normalises_a_constant_image_by_hand():
    # 40 x 20 input resized to 16 x 8: a constant image stays constant.
    out = build_test_transform(TransformConfig(**SMALL))(_constant((200, 100, 50), 40, 20))
    assert out.shape == (3, 16, 8)
    assert out.dtype == torch.float32
    for channel, value in enumerate(EXPECTED_200_100_50):
        assert torch.allclose(out[channel], torch.full((16, 8), value), atol=1e-5)


def test_float_input_gives_the_same_result_as_uint8():
    image = _constant((200, 100, 50))
    transform = build_test_transform(PLAIN)
    assert torch.allclose(transform(image.float() / 255), transform(image), atol=1e-6)


def test_resize_halving_uses_the_antialiased_triangle_filter():
    # Halving the width: output column i is centred at input x = 2 * (i + 0.5); the
    # triangle filter stretched by 2 gives input column j (centre j + 0.5) the weight
    # max(0, 1 - |j + 0.5 - x| / 2): for x = 1 -> (0.75, 0.75, 0.25, 0), normalised
    # (3/7, 3/7, 1/7, 0); for x = 3 -> (0, 1/7, 3/7, 3/7). Columns [0, 0, 1, 1] thus give
    # [1/7, 6/7]. The height is unchanged, so rows are copied.
    image = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(3, 5, 4)
    expected = torch.tensor([1 / 7, 6 / 7]).expand(3, 5, 2)
    assert torch.allclose(resize(image, 5, 2), expected, atol=1e-6)


def test_default_config_is_the_paper_size_and_imagenet_statistics():
    cfg = TransformConfig()
    assert (cfg.height, cfg.width) == (384, 128)
    assert cfg.mean == (0.485, 0.456, 0.406) == IMAGENET_MEAN
    assert cfg.std == (0.229, 0.224, 0.225) == IMAGENET_STD
    assert _augment_one(cfg, _constant((1, 2, 3)), 1).shape == (3, 384, 128)


# --- the batched augmentation, exactly -----------------------------------------------------


@pytest.mark.parametrize("source", [(16, 8), (20, 10), (8, 4)])
def test_shapes_dtypes_and_no_randomness_equal_the_test_transform(source):
    images = _images(6, *source)
    out = TrainAugment(PLAIN)(images, _gen(0))
    assert out.shape == (6, 3, 16, 8)
    assert out.dtype == torch.float32
    assert out.is_contiguous()
    test_transform = build_test_transform(PLAIN)
    for i in range(6):
        assert torch.equal(out[i], test_transform(images[i]))


def test_flip_mirrors_columns():
    cfg = TransformConfig(**SMALL, flip_p=1.0, pad=0, erasing_p=0.0)
    out = _augment_one(cfg, _ramp(), 0)
    # After the flip column j holds 10 * (7 - j); normalised with the red statistics.
    for j in range(8):
        expected = (10 * (7 - j) / 255 - 0.485) / 0.229
        assert torch.allclose(out[0, :, j], torch.full((16,), expected), atol=1e-5)


def test_reference_pad_crop_keeps_size_and_shifts():
    # The reference itself, by hand, before the batched version is compared with it.
    image = torch.arange(1, 3 * 6 * 4 + 1, dtype=torch.float32).view(3, 6, 4)
    pad = 2
    assert torch.equal(reference_pad_crop(image, pad, pad, pad), image)
    shifted = reference_pad_crop(image, pad, 0, 0)
    assert torch.equal(shifted[:, pad:, pad:], image[:, :-pad, :-pad])
    assert shifted[:, :pad, :].abs().sum() == 0 and shifted[:, :, :pad].abs().sum() == 0


def test_flip_pad_crop_with_fixed_offsets_equals_the_reference_per_sample():
    pad = 2
    combos = [
        (f, t, l) for f in (False, True) for t in range(2 * pad + 1) for l in range(2 * pad + 1)
    ]
    images = to_float(_images(len(combos), 7, 5))
    flip = torch.tensor([c[0] for c in combos])
    top = torch.tensor([c[1] for c in combos])
    left = torch.tensor([c[2] for c in combos])
    out = flip_pad_crop(images, flip, top, left, pad)
    assert out.shape == images.shape
    for i, (f, t, l) in enumerate(combos):
        source = images[i].flip(-1) if f else images[i]
        assert torch.equal(out[i], reference_pad_crop(source, pad, t, l)), (f, t, l)


def test_flip_pad_crop_by_hand():
    # One 1 x 2 x 3 image, pad 1, crop at (top=0, left=2): the padded image is
    #   0 0 0 0 0
    #   0 1 2 3 0
    #   0 4 5 6 0
    #   0 0 0 0 0   -> rows 0-1, columns 2-4: [[0, 0, 0], [2, 3, 0]].
    # Flipped first ([[3, 2, 1], [6, 5, 4]]), the same crop gives [[0, 0, 0], [2, 1, 0]].
    image = torch.tensor([[[1.0, 2, 3], [4, 5, 6]]]).expand(2, 1, 2, 3)
    out = flip_pad_crop(
        image, torch.tensor([False, True]), torch.tensor([0, 0]), torch.tensor([2, 2]), pad=1
    )
    assert out[0, 0].tolist() == [[0, 0, 0], [2, 3, 0]]
    assert out[1, 0].tolist() == [[0, 0, 0], [2, 1, 0]]


def test_box_mask_by_hand():
    erase = torch.tensor([True, False])
    boxes = torch.tensor([[1, 2, 2, 3], [0, 0, 4, 5]])
    mask = box_mask(erase, boxes, 4, 5)
    expected = torch.zeros(2, 1, 4, 5, dtype=torch.bool)
    expected[0, 0, 1:3, 2:5] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("source", [(10, 6), (16, 8)])
def test_full_pipeline_outputs_are_reference_candidates_with_a_zero_box(source):
    """Every sample must be the CPU pipeline's output for some flip and crop, erased in a box.

    The candidates are all 2 x 5 x 5 (flip, top, left) choices built with the plain
    references. After normalisation no pixel of these images is exactly 0 in all channels
    (0 would need v / 255 == mean exactly), so the all-zero pixels are the erased box.
    """
    cfg = TransformConfig(**SMALL, flip_p=0.5, pad=2, erasing_p=0.5)
    images = _images(48, *source)
    out = TrainAugment(cfg)(images, _gen(3))
    num_erased = 0
    for i in range(len(images)):
        base = resize(to_float(images[i]), 16, 8)
        zero = (out[i] == 0).all(dim=0)
        if zero.any():
            num_erased += 1
            rows = torch.nonzero(zero.any(dim=1)).flatten()
            cols = torch.nonzero(zero.any(dim=0)).flatten()
            box = zero[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            assert box.all(), "the erased pixels are not a filled rectangle"
            assert 0.02 <= box.numel() / (16 * 8) <= 0.4
        matches = 0
        for flip in (False, True):
            source = base.flip(-1) if flip else base
            for top in range(5):
                for left in range(5):
                    cand = normalize(reference_pad_crop(source, 2, top, left), cfg.mean, cfg.std)
                    matches += bool(torch.equal(out[i][:, ~zero], cand[:, ~zero]))
        assert matches >= 1, f"sample {i} is no flip/crop of its image"
    assert 10 <= num_erased <= 38  # about half of 48


@pytest.mark.parametrize("source", [(16, 8), (20, 10)])
def test_float_input_gives_the_same_batch_as_uint8(source):
    cfg = TransformConfig(**SMALL, pad=2)
    images = _images(8, *source)
    from_uint8 = TrainAugment(cfg)(images, _gen(7))
    as_float = images.float() / 255
    from_float = TrainAugment(cfg)(as_float, _gen(7))
    assert torch.equal(from_uint8, from_float)
    assert torch.equal(as_float, images.float() / 255)  # the input is not modified in place


def test_channels_last_output_has_the_same_values():
    cfg = TransformConfig(**SMALL, pad=2)
    images = _images(4, 16, 8)
    plain = TrainAugment(cfg)(images, _gen(5))
    last = TrainAugment(cfg, channels_last=True)(images, _gen(5))
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(plain, last)


def test_fixed_generator_is_deterministic_and_seeds_differ():
    cfg = TransformConfig(**SMALL, pad=2)
    images = _images(16, 16, 8)
    augment = TrainAugment(cfg)
    first = augment(images, _gen(11))
    assert torch.equal(first, augment(images, _gen(11)))
    assert not torch.equal(first, augment(images, _gen(12)))


def test_bad_batch_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        TrainAugment(PLAIN)(_images(1, 16, 8)[0], _gen(0))


def test_the_augmentation_draws_from_its_generator_not_torchs_global_one():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    TrainAugment(TransformConfig(**SMALL, pad=2))(_images(4, 16, 8), _gen(0))
    assert torch.equal(torch.get_rng_state(), state)


# --- random erasing -----------------------------------------------------------------------


def test_erased_box_is_zero_after_normalisation_and_the_rest_untouched():
    cfg = TransformConfig(**SMALL, flip_p=0.0, pad=0, erasing_p=1.0)
    out = _augment_one(cfg, _constant((200, 100, 50)), 7)
    zero = out == 0
    rows = torch.nonzero(zero[0].any(1)).flatten()
    cols = torch.nonzero(zero[0].any(0)).flatten()
    # The zeros form one rectangle, the same in all channels.
    assert zero[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    assert int(zero.sum()) == 3 * len(rows) * len(cols)
    assert 0.02 <= len(rows) * len(cols) / (16 * 8) <= 0.4
    for channel, value in enumerate(EXPECTED_200_100_50):
        kept = out[channel][~zero[channel]]
        assert torch.allclose(kept, torch.full_like(kept, value), atol=1e-5)


def test_erasing_box_aspect_in_ratio_range():
    erase, boxes = draw_erasing_boxes(500, 384, 128, _gen(6), p=1.0)
    box_h, box_w = boxes[erase, 2].double(), boxes[erase, 3].double()
    # The unrounded sides h*, w* are within 0.5 px of the rounded ones, 0.3 <= h*/w* <= 3.3.
    assert ((box_h + 0.5) / (box_w - 0.5) >= 0.3).all()
    assert ((box_h - 0.5) / (box_w + 0.5) <= 3.3).all()


# --- statistics: batched draws against the plain sequential draws ---------------------------

N = 4000


def _rate_diff_ok(a: np.ndarray, b: np.ndarray) -> bool:
    """Two rates within 4 standard errors of their difference."""
    pooled = (a.sum() + b.sum()) / (len(a) + len(b))
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / len(a) + 1 / len(b)))
    return abs(a.mean() - b.mean()) <= 4 * se


def _sequential_draws(cfg: TransformConfig, seed: int):
    generator = _gen(seed)
    flips = np.array([float(torch.rand((), generator=generator)) < cfg.flip_p for _ in range(N)])
    offsets = torch.randint(0, 2 * cfg.pad + 1, (N, 2), generator=generator).numpy()
    boxes = [
        reference_erasing_box(
            cfg.height,
            cfg.width,
            generator,
            p=cfg.erasing_p,
            scale=cfg.erasing_scale,
            ratio=cfg.erasing_ratio,
        )
        for _ in range(N)
    ]
    erased = np.array([b is not None for b in boxes])
    box_array = np.array([b for b in boxes if b is not None], dtype=np.int64)
    return flips, offsets, erased, box_array


def _batched_draws(cfg: TransformConfig, seed: int):
    params = TrainAugment(cfg).draw(N, _gen(seed))
    offsets = torch.stack([params.top, params.left], dim=1).numpy()
    erased = params.erase.numpy()
    return params.flip.numpy(), offsets, erased, params.boxes[params.erase].numpy()


# Market-1501 training geometry, and a tiny one where about 1.7 % of attempts are valid, so
# about 19 % of erasing samples exhaust their 100 attempts and erase nothing.
GEOMETRIES = {
    "default_384x128": TransformConfig(),
    "hard_8x8": TransformConfig(
        height=8,
        width=8,
        pad=3,
        flip_p=0.3,
        erasing_p=0.8,
        erasing_scale=(0.3, 0.4),
        erasing_ratio=(2.8, 3.3),
    ),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_batched_draws_match_the_sequential_draws_statistically(name):
    cfg = GEOMETRIES[name]
    c_flip, c_off, c_erased, c_boxes = _sequential_draws(cfg, seed=21)
    b_flip, b_off, b_erased, b_boxes = _batched_draws(cfg, seed=22)

    assert _rate_diff_ok(c_flip, b_flip)
    assert abs(b_flip.mean() - cfg.flip_p) <= 4 * math.sqrt(cfg.flip_p * (1 - cfg.flip_p) / N)

    # Crop offsets: uniform on [0, 2 * pad] and the same histogram as the sequential draws.
    bins = np.arange(2 * cfg.pad + 2)
    for axis in (0, 1):
        b_hist = np.histogram(b_off[:, axis], bins)[0]
        c_hist = np.histogram(c_off[:, axis], bins)[0]
        assert b_hist.sum() == N  # nothing outside [0, 2 * pad]
        assert stats.chisquare(b_hist).pvalue > ALPHA
        assert stats.chi2_contingency(np.stack([b_hist, c_hist])).pvalue > ALPHA

    assert _rate_diff_ok(c_erased, b_erased)
    if name == "hard_8x8":
        # The attempt limit matters here: the rate is well below erasing_p.
        assert b_erased.mean() < cfg.erasing_p - 0.08

    area = cfg.height * cfg.width
    for boxes in (b_boxes, c_boxes):
        top, left, box_h, box_w = boxes.T
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + box_h <= cfg.height).all() and (left + box_w <= cfg.width).all()
        assert (box_h < cfg.height).all() and (box_w < cfg.width).all()
        fraction = box_h * box_w / area
        assert fraction.min() >= cfg.erasing_scale[0] and fraction.max() <= cfg.erasing_scale[1]

    b_frac = b_boxes[:, 2] * b_boxes[:, 3] / area
    c_frac = c_boxes[:, 2] * c_boxes[:, 3] / area
    assert stats.ks_2samp(b_frac, c_frac).pvalue > ALPHA
    assert abs(b_frac.mean() - c_frac.mean()) <= 4 * math.sqrt(
        b_frac.var() / len(b_frac) + c_frac.var() / len(c_frac)
    )
    for q in (0.1, 0.5, 0.9):
        assert abs(np.quantile(b_frac, q) - np.quantile(c_frac, q)) <= 0.03

    b_aspect = b_boxes[:, 2] / b_boxes[:, 3]
    c_aspect = c_boxes[:, 2] / c_boxes[:, 3]
    assert stats.ks_2samp(b_aspect, c_aspect).pvalue > ALPHA
    assert b_aspect.min() == pytest.approx(c_aspect.min(), rel=0.15)
    assert b_aspect.max() == pytest.approx(c_aspect.max(), rel=0.15)

    # Position relative to the free range, (top / (H - h)): uniform in both.
    for column, size, extent in ((0, 2, cfg.height), (1, 3, cfg.width)):
        b_rel = b_boxes[:, column] / np.maximum(extent - b_boxes[:, size], 1)
        c_rel = c_boxes[:, column] / np.maximum(extent - c_boxes[:, size], 1)
        assert stats.ks_2samp(b_rel, c_rel).pvalue > ALPHA


def test_erasing_boxes_zero_where_not_erased_and_never_when_p_is_zero():
    erase_mask, boxes = draw_erasing_boxes(200, 16, 8, _gen(0), p=0.0)
    assert not erase_mask.any()
    assert (boxes == 0).all()
    erase_mask, boxes = draw_erasing_boxes(200, 16, 8, _gen(0), p=0.5)
    assert (boxes[~erase_mask] == 0).all()
    assert (boxes[erase_mask, 2:] > 0).all()


# --- config validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"height": 0}, "height must be a positive integer, got 0"),
        ({"width": 12.5}, "width must be a positive integer"),
        ({"pad": -1}, "pad must be a non-negative integer, got -1"),
        ({"flip_p": 1.5}, r"flip_p must be a probability in \[0, 1\], got 1.5"),
        ({"erasing_p": -0.1}, "erasing_p must be a probability"),
        ({"erasing_scale": (0.5, 0.1)}, "erasing_scale must satisfy"),
        ({"erasing_scale": (0.02,)}, "erasing_scale must be a pair"),
        ({"erasing_ratio": (0.0, 3.3)}, "erasing_ratio must satisfy"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 numbers"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TransformConfig(**kwargs)


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "color", "suffix", "expected"),
    [
        ("RGB", (10, 20, 30), ".png", (10, 20, 30)),
        ("L", 77, ".png", (77, 77, 77)),
        ("LA", (77, 9), ".png", (77, 77, 77)),
        ("RGBA", (10, 20, 30, 128), ".png", (10, 20, 30)),  # alpha dropped
        ("I;16", 300, ".png", None),  # 16-bit grayscale: only the shape is checked
        # PIL >= 10.1's CMYK -> RGB: R = round((255 - C) * (255 - K) / 255), likewise G
        # from M and B from Y: 205 * 235 / 255 = 188.9, 155 * 235 / 255 = 142.8,
        # 105 * 235 / 255 = 96.8.
        ("CMYK", (50, 100, 150, 20), ".tif", (189, 143, 97)),
    ],
)
def test_decode_converts_modes_to_rgb(tmp_path, mode, color, suffix, expected):
    path = tmp_path / f"img{suffix}"
    Image.new(mode, (5, 7), color).save(path)
    out = decode_image(path)
    assert out.shape == (3, 7, 5) and out.dtype == torch.uint8
    if expected is not None:
        assert torch.equal(out, _constant(expected, 7, 5))


def test_decode_palette_image_with_transparency(tmp_path):
    image = Image.new("P", (4, 3), 1)
    palette = [0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6)  # index 1 is pure red
    image.putpalette(palette)
    image.info["transparency"] = 0
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    out = decode_image(path)
    assert torch.equal(out, _constant((255, 0, 0), 3, 4))


def test_decode_jpeg_round_trip_is_close(tmp_path):
    path = tmp_path / "img.jpg"
    Image.new("RGB", (16, 16), (120, 60, 200)).save(path, quality=95)
    out = decode_image(path).int()
    assert (out - _constant((120, 60, 200), 16, 16).int()).abs().max() <= 3


def test_truncated_jpeg_raises_dataset_error_naming_the_path(tmp_path):
    full = tmp_path / "full.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(full, quality=90)
    data = full.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated.jpg"):
        decode_image(truncated)


def test_empty_and_non_image_files_raise_dataset_error(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty.jpg"):
        decode_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DatasetError, match="notes.png"):
        decode_image(text)


def test_missing_file_raises_dataset_not_found(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="missing.jpg"):
        decode_image(tmp_path / "missing.jpg")


# --- loaders --------------------------------------------------------------------------------


@pytest.fixture
def records(tmp_path):
    """6 identities x 3 images, each a constant colour that encodes (pid, image)."""
    out = []
    for pid in range(6):
        for n in range(3):
            path = tmp_path / f"{pid:04d}_c{n + 1}_{n:02d}.png"
            Image.new("RGB", (8, 16), (40 * pid, 80 * n, 7)).save(path)
            out.append((str(path), pid, n))
    return out


def test_image_dataset_returns_image_pid_camid_index(records):
    dataset = ImageDataset(records, transform=None)
    image, pid, camid, index = dataset[7]
    assert (pid, camid, index) == (2, 1, 7)
    assert torch.equal(image, _constant((80, 80, 7)))
    assert len(dataset) == 18


def test_train_loader_yields_the_sampler_batches_decoded_to_size(records):
    sampler = PKSampler([r[1] for r in records], p=2, k=3, seed=0)
    loader = build_train_loader(records, sampler, 32, 16, num_workers=0, pin_memory=False)
    batches = list(loader)
    assert len(batches) == 3  # 6 ids / P=2
    for (images, pids, camids, indices), expected in zip(batches, sampler.batches(0)):
        # uint8, resized from 16 x 8 to 32 x 16: a constant colour stays that colour.
        assert images.shape == (6, 3, 32, 16) and images.dtype == torch.uint8
        assert indices.tolist() == expected
        assert pids.tolist() == [records[i][1] for i in expected]
        assert camids.tolist() == [records[i][2] for i in expected]
        for image, index in zip(images, expected):
            pid, n = records[index][1], records[index][2]
            assert torch.equal(image, _constant((40 * pid, 80 * n, 7), 32, 16))


def test_decoding_workers_return_what_the_main_process_decodes(records):
    sampler = PKSampler([r[1] for r in records], p=2, k=3, seed=0)
    in_process = [b[0] for b in build_train_loader(records, sampler, 32, 16, num_workers=0)]
    workers = [b[0] for b in build_train_loader(records, sampler, 32, 16, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(in_process, workers, strict=True))


def test_test_loader_keeps_order_and_the_short_last_batch(records):
    loader = build_test_loader(records, build_test_transform(PLAIN), batch_size=4, num_workers=0)
    batches = list(loader)
    assert [len(b[3]) for b in batches] == [4, 4, 4, 4, 2]
    assert torch.cat([b[3] for b in batches]).tolist() == list(range(18))
    images = torch.cat([b[0] for b in batches])
    # Record 7 is (80, 80, 7): red (80 / 255 - 0.485) / 0.229 = -0.171275 / 0.229 = -0.747924.
    assert math.isclose(float(images[7, 0, 0, 0]), -0.747924, abs_tol=1e-5)


def test_bad_loader_arguments_raise(records):
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        build_test_loader(records, build_test_transform(PLAIN), batch_size=0)
    with pytest.raises(ConfigError, match="num_workers must be a non-negative integer"):
        build_test_loader(records, build_test_transform(PLAIN), num_workers=-1)
