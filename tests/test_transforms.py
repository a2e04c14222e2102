"""Tests of decoding, augmentation and the loaders built on them."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from canlib.data.loader import ImageDataset, build_test_loader, build_train_loader
from canlib.data.sampling import PKSampler
from canlib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformConfig,
    build_test_transform,
    build_train_transform,
    decode_image,
    pad_crop,
    pad_crop_params,
    random_erasing_params,
    resize,
)
from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError

SMALL = {"height": 16, "width": 8}
# No randomness: every random step switched off.
PLAIN = TransformConfig(**SMALL, flip_p=0.0, pad=0, erasing_p=0.0)


def _constant(rgb: tuple[int, int, int], height: int = 16, width: int = 8) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, height, width).clone()


def _ramp(height: int = 16, width: int = 8) -> torch.Tensor:
    """Asymmetric image: column j has value 10 * j in every channel and row."""
    row = torch.arange(width, dtype=torch.uint8) * 10
    return row.expand(3, height, width).clone()


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


def test_train_transform_with_randomness_off_equals_test_transform():
    image = torch.randint(0, 256, (3, 30, 12), dtype=torch.uint8)
    train = build_train_transform(PLAIN, torch.Generator().manual_seed(0))
    assert torch.equal(train(image), build_test_transform(PLAIN)(image))


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
    out = build_train_transform(cfg, torch.Generator().manual_seed(1))(_constant((1, 2, 3)))
    assert out.shape == (3, 384, 128)


# --- flip, pad + crop ---------------------------------------------------------------------


def test_flip_mirrors_columns():
    cfg = TransformConfig(**SMALL, flip_p=1.0, pad=0, erasing_p=0.0)
    out = build_train_transform(cfg, torch.Generator().manual_seed(0))(_ramp())
    # After the flip column j holds 10 * (7 - j); normalised with the red statistics.
    for j in range(8):
        expected = (10 * (7 - j) / 255 - 0.485) / 0.229
        assert torch.allclose(out[0, :, j], torch.full((16,), expected), atol=1e-5)


def test_flip_happens_with_probability_flip_p():
    cfg = TransformConfig(**SMALL, flip_p=0.3, pad=0, erasing_p=0.0)
    transform = build_train_transform(cfg, torch.Generator().manual_seed(2))
    image = _ramp()
    # The ramp rises left to right; after a flip the last column is the darker one.
    count = 0
    for _ in range(2000):
        out = transform(image)
        count += bool(out[0, 0, 7] < out[0, 0, 0])
    # Binomial(2000, 0.3): standard deviation 20.5; allow 4 of them.
    assert abs(count - 600) < 82


def test_pad_crop_keeps_size_and_shifts():
    image = torch.arange(1, 3 * 6 * 4 + 1, dtype=torch.float32).view(3, 6, 4)
    pad = 2
    # Crop at (pad, pad) is the original image.
    assert torch.equal(pad_crop(image, pad, pad, pad), image)
    # Crop at (0, 0): the image moves down-right by pad, zeros fill the top and left.
    shifted = pad_crop(image, pad, 0, 0)
    assert shifted.shape == image.shape
    assert torch.equal(shifted[:, pad:, pad:], image[:, :-pad, :-pad])
    assert shifted[:, :pad, :].abs().sum() == 0 and shifted[:, :, :pad].abs().sum() == 0
    # Crop at (2 * pad, 2 * pad): it moves up-left.
    assert torch.equal(
        pad_crop(image, pad, 2 * pad, 2 * pad)[:, :-pad, :-pad], image[:, pad:, pad:]
    )


def test_pad_crop_offsets_cover_zero_to_two_pad_uniformly():
    generator = torch.Generator().manual_seed(3)
    draws = np.array([pad_crop_params(3, generator) for _ in range(7000)])
    assert draws.min() == 0 and draws.max() == 6
    counts = np.bincount(draws[:, 0], minlength=7)
    # 1000 expected per value; standard deviation about 29.
    assert np.all(np.abs(counts - 1000) < 130)


def test_train_transform_keeps_shape_and_dtype():
    cfg = TransformConfig(**SMALL, pad=3)
    transform = build_train_transform(cfg, torch.Generator().manual_seed(4))
    for _ in range(20):
        out = transform(torch.randint(0, 256, (3, 21, 11), dtype=torch.uint8))
        assert out.shape == (3, 16, 8) and out.dtype == torch.float32


# --- random erasing -----------------------------------------------------------------------


def test_erasing_happens_with_probability_p_and_area_in_scale():
    generator = torch.Generator().manual_seed(5)
    boxes = [random_erasing_params(384, 128, generator, p=0.5) for _ in range(4000)]
    erased = [b for b in boxes if b is not None]
    # Binomial(4000, 0.5): standard deviation 31.6; allow 4 of them.
    assert abs(len(erased) - 2000) < 127
    fractions = []
    for top, left, box_h, box_w in erased:
        assert 0 <= top and top + box_h <= 384 and 0 <= left and left + box_w <= 128
        fractions.append(box_h * box_w / (384 * 128))
    assert 0.02 <= min(fractions) and max(fractions) <= 0.4
    # The area fraction is drawn from U(0.02, 0.4) (mean 0.21) and kept when the box fits;
    # large, extreme-aspect boxes fail more often, so the kept mean is a bit below 0.21.
    assert 0.15 < np.mean(fractions) < 0.22


def test_erasing_box_aspect_in_ratio_range():
    generator = torch.Generator().manual_seed(6)
    for _ in range(500):
        _, _, box_h, box_w = random_erasing_params(384, 128, generator, p=1.0)
        # The unrounded sides h*, w* are within 0.5 px of the rounded ones, and
        # 0.3 <= h* / w* <= 3.3.
        assert (box_h + 0.5) / (box_w - 0.5) >= 0.3
        assert (box_h - 0.5) / (box_w + 0.5) <= 3.3


def test_erased_box_is_zero_after_normalisation_and_the_rest_untouched():
    cfg = TransformConfig(**SMALL, flip_p=0.0, pad=0, erasing_p=1.0)
    out = build_train_transform(cfg, torch.Generator().manual_seed(7))(_constant((200, 100, 50)))
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


def test_erasing_with_p_zero_never_erases():
    generator = torch.Generator().manual_seed(8)
    assert all(random_erasing_params(20, 10, generator, p=0.0) is None for _ in range(100))


# --- randomness sources --------------------------------------------------------------------


def test_same_generator_seed_same_augmentations():
    cfg = TransformConfig(**SMALL, pad=2)
    image = torch.randint(0, 256, (3, 16, 8), dtype=torch.uint8)
    a = build_train_transform(cfg, torch.Generator().manual_seed(9))
    b = build_train_transform(cfg, torch.Generator().manual_seed(9))
    outs_a = [a(image) for _ in range(5)]
    assert all(torch.equal(x, b(image)) for x in outs_a)
    assert not all(torch.equal(outs_a[0], x) for x in outs_a[1:])


def test_default_generator_follows_torch_initial_seed():
    cfg = TransformConfig(**SMALL, pad=2)
    image = torch.randint(0, 256, (3, 16, 8), dtype=torch.uint8)
    transform = build_train_transform(cfg)
    for seed in (123, 77):  # a new seed (as in a new worker) starts a new stream
        torch.manual_seed(seed)
        reference = build_train_transform(cfg, torch.Generator().manual_seed(seed))
        assert all(torch.equal(transform(image), reference(image)) for _ in range(4))
    # The transform draws from its own generator, not torch's global one.
    torch.manual_seed(123)
    state = torch.get_rng_state()
    transform(image)
    assert torch.equal(torch.get_rng_state(), state)


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


def test_train_loader_yields_sampler_batches(records):
    sampler = PKSampler([r[1] for r in records], p=2, k=3, seed=0)
    transform = build_train_transform(TransformConfig(**SMALL, pad=2))
    loader = build_train_loader(records, transform, sampler, num_workers=0, pin_memory=False)
    batches = list(loader)
    assert len(batches) == 3  # 6 ids / P=2
    for (images, pids, camids, indices), expected in zip(batches, sampler.batches(0)):
        assert images.shape == (6, 3, 16, 8)
        assert indices.tolist() == expected
        assert pids.tolist() == [records[i][1] for i in expected]
        assert camids.tolist() == [records[i][2] for i in expected]


def test_test_loader_keeps_order_and_the_short_last_batch(records):
    loader = build_test_loader(records, build_test_transform(PLAIN), batch_size=4, num_workers=0)
    batches = list(loader)
    assert [len(b[3]) for b in batches] == [4, 4, 4, 4, 2]
    assert torch.cat([b[3] for b in batches]).tolist() == list(range(18))
    images = torch.cat([b[0] for b in batches])
    # Record 7 is (80, 80, 7): red (80 / 255 - 0.485) / 0.229 = -0.171275 / 0.229 = -0.747924.
    assert math.isclose(float(images[7, 0, 0, 0]), -0.747924, abs_tol=1e-5)


def test_workers_draw_different_augmentations(records):
    # Every record is the same image; with erasing only, workers must not repeat each other.
    same = [(records[0][0], pid, 0) for pid in range(8) for _ in range(2)]
    cfg = TransformConfig(**SMALL, flip_p=0.0, pad=0, erasing_p=1.0)
    sampler = PKSampler([r[1] for r in same], p=2, k=2, seed=0)
    loader = build_train_loader(
        same, build_train_transform(cfg), sampler, num_workers=2, pin_memory=False, seed=1
    )
    first = [b[0] for b in loader]
    # Batches 0 and 1 come from workers 0 and 1, each drawing from its own seed.
    assert not torch.equal(first[0], first[1])
    # The same DataLoader seed repeats the same augmentations.
    again = [b[0] for b in loader]
    assert not torch.equal(first[0], again[0])  # a new epoch's workers get new seeds
    loader2 = build_train_loader(
        same, build_train_transform(cfg), sampler, num_workers=2, pin_memory=False, seed=1
    )
    assert all(torch.equal(a, b) for a, b in zip(first, (b[0] for b in loader2)))


def test_bad_loader_arguments_raise(records):
    with pytest.raises(ConfigError, match="batch_size must be a positive integer, got 0"):
        build_test_loader(records, build_test_transform(PLAIN), batch_size=0)
    with pytest.raises(ConfigError, match="num_workers must be a non-negative integer"):
        build_test_loader(records, build_test_transform(PLAIN), num_workers=-1)
