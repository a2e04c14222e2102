"""Decoding and augmentation of person crops, as plain functions of tensors and random draws.

Decoding (:func:`decode_image`, a file to a ``uint8`` ``(3, H, W)`` tensor) is separate from
augmentation, so that a batched GPU path can decode on CPU workers and augment on the GPU.

Every augmentation is split into a *draw* (a function of the image size and a
``torch.Generator`` that returns plain numbers, e.g. :func:`random_erasing_params`) and an
*apply* (a deterministic function of the tensor and those numbers, e.g. :func:`erase`). A
batched version can then draw the same distribution per sample and apply it to a
``(B, 3, H, W)`` tensor. No torchvision ``transforms`` classes are used, because they draw
from torch's global RNG.

Training pipeline, in BoT's order (Luo et al., "Bag of Tricks and a Strong Baseline for
Deep Person Re-identification", 2019): resize to 384 x 128 (paper §4.6) -> random
horizontal flip (p=0.5) -> zero-pad 10 and random crop back to size -> ImageNet
normalisation -> random erasing (p=0.5). The paper names only the input size; the rest is
ours, after BoT and torchreid. Test pipeline: resize -> normalisation.

Randomness in DataLoader workers: a train transform built without a generator creates its
own ``torch.Generator`` lazily, seeded from ``torch.initial_seed()`` of the process that
calls it. PyTorch seeds each worker with ``base_seed + worker_id`` (``base_seed`` drawn
from the main process's RNG, or from the DataLoader's ``generator``, for every epoch's
workers), so workers draw different augmentations, and a seeded run is repeatable. With
``num_workers=0`` the main process's seed is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Decoder failures PIL raises for unreadable, truncated or absurdly large files.
# UnidentifiedImageError and "image file is truncated" are OSErrors; some plugins raise
# SyntaxError or ValueError on malformed headers.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _source(text: str) -> dict[str, str]:
    return {"source": text}


@dataclass(frozen=True)
class TransformConfig:
    """Sizes and probabilities of the image pipeline.

    Args:
        height: Model input height in pixels (paper §4.6: 384).
        width: Model input width in pixels (paper §4.6: 128).
        flip_p: Probability of a horizontal flip (ours, BoT/torchreid: 0.5).
        pad: Zero padding on each side before the random crop back to size; 0 disables
            (ours, BoT: 10).
        erasing_p: Probability of random erasing (ours, BoT/torchreid: 0.5).
        erasing_scale: Range of the erased area as a fraction of the image (ours, Zhong et
            al. / BoT: (0.02, 0.4)).
        erasing_ratio: Range of the erased box's height / width (ours, (0.3, 3.3)).
        mean: Per-channel mean of the normalisation, RGB in [0, 1] (ImageNet).
        std: Per-channel standard deviation of the normalisation (ImageNet).

    Raises:
        ConfigError: If a size is not a positive integer, a probability is outside [0, 1],
            a range is empty or out of bounds, or mean/std are not 3 numbers (std > 0).
    """

    height: int = field(default=384, metadata=_source("paper: §4.6, 384x128 inputs"))
    width: int = field(default=128, metadata=_source("paper: §4.6, 384x128 inputs"))
    flip_p: float = field(default=0.5, metadata=_source("ours: horizontal flip, BoT/torchreid"))
    pad: int = field(default=10, metadata=_source("ours: pad 10 + random crop, BoT"))
    erasing_p: float = field(default=0.5, metadata=_source("ours: random erasing, BoT"))
    erasing_scale: tuple[float, float] = field(
        default=(0.02, 0.4), metadata=_source("ours: area range, Zhong et al. 2017 / BoT")
    )
    erasing_ratio: tuple[float, float] = field(
        default=(0.3, 3.3), metadata=_source("ours: aspect range, Zhong et al. 2017 / BoT")
    )
    mean: tuple[float, float, float] = field(
        default=IMAGENET_MEAN, metadata=_source("ours: ImageNet statistics (pretrained backbone)")
    )
    std: tuple[float, float, float] = field(
        default=IMAGENET_STD, metadata=_source("ours: ImageNet statistics (pretrained backbone)")
    )

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        if not _is_int(self.pad) or self.pad < 0:
            raise ConfigError(f"pad must be a non-negative integer, got {self.pad!r}.")
        for name in ("flip_p", "erasing_p"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}.")
        low, high = _pair("erasing_scale", self.erasing_scale)
        if not 0.0 < low <= high < 1.0:
            raise ConfigError(
                f"erasing_scale must satisfy 0 < low <= high < 1, got {self.erasing_scale!r}."
            )
        low, high = _pair("erasing_ratio", self.erasing_ratio)
        if not 0.0 < low <= high:
            raise ConfigError(
                f"erasing_ratio must satisfy 0 < low <= high, got {self.erasing_ratio!r}."
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, (int, float)) for v in value):
                raise ConfigError(f"{name} must be 3 numbers (R, G, B), got {value!r}.")
        if min(self.std) <= 0:
            raise ConfigError(f"std must be positive, got {self.std!r}.")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _pair(name: str, value: object) -> tuple[float, float]:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) for v in value)
    ):
        raise ConfigError(f"{name} must be a pair of numbers (low, high), got {value!r}.")
    return float(value[0]), float(value[1])


# --- decoding -------------------------------------------------------------------------


def decode_image(path: str | Path) -> torch.Tensor:
    """Read an image file into an RGB ``uint8`` tensor.

    Grayscale, RGBA, CMYK, palette and other modes are converted to RGB with PIL
    (alpha is dropped, not composited: ReID crops carry no meaningful transparency). PIL's
    global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone; at its default (False) a
    truncated file fails to load.

    Args:
        path: Path of the image file.

    Returns:
        Tensor of shape ``(3, H, W)``, dtype ``torch.uint8``.

    Raises:
        DatasetNotFoundError: If the file does not exist.
        DatasetError: If the file is empty, truncated or not a readable image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P":
                # Palette transparency must go through RGBA, else PIL warns.
                image = image.convert("RGBA")
            rgb = image.convert("RGB")
    except FileNotFoundError as error:
        raise DatasetNotFoundError(f"Image file not found: {path}.") from error
    except _DECODE_ERRORS as error:
        raise DatasetError(
            f"Cannot decode image {path}: expected a complete image file ({error})."
        ) from error
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


# --- deterministic operations ---------------------------------------------------------


def to_float(image: torch.Tensor) -> torch.Tensor:
    """``uint8`` in [0, 255] to float32 in [0, 1]; a float tensor is returned as float32.

    Args:
        image: ``(..., 3, H, W)`` tensor, ``uint8`` or floating point (assumed in [0, 1]).
    """
    if image.dtype == torch.uint8:
        return image.to(torch.float32) / 255.0
    if not image.is_floating_point():
        raise TypeError(f"image must be uint8 or floating point, got {image.dtype}.")
    return image.to(torch.float32)


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize with antialiasing (ours; MGN-pytorch uses PIL bicubic, BoT bilinear).

    Antialiasing matters when shrinking; the output stays within the input's range.

    Args:
        image: Float ``(3, H, W)`` or ``(B, 3, H, W)`` tensor.
        height: Output height.
        width: Output width.
    """
    if image.shape[-2:] == (height, width):
        return image
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    out = F.interpolate(
        batch, size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return out if image.dim() == 4 else out.squeeze(0)


def hflip(image: torch.Tensor) -> torch.Tensor:
    """Mirror left-right (the last axis).

    Args:
        image: ``(..., H, W)`` tensor.
    """
    return image.flip(-1)


def pad_crop(image: torch.Tensor, pad: int, top: int, left: int) -> torch.Tensor:
    """Zero-pad ``pad`` pixels on each side, then crop the original size at ``(top, left)``.

    Zero is black before normalisation, as in BoT (``T.Pad`` on the PIL image).

    Args:
        image: ``(..., H, W)`` tensor.
        pad: Padding on each side (>= 0).
        top: Crop row in the padded image, in ``[0, 2 * pad]``.
        left: Crop column in the padded image, in ``[0, 2 * pad]``.
    """
    if pad == 0:
        return image
    height, width = image.shape[-2:]
    padded = F.pad(image, (pad, pad, pad, pad), value=0.0)
    return padded[..., top : top + height, left : left + width]


def normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(image - mean) / std`` per channel.

    Args:
        image: Float ``(..., 3, H, W)`` tensor in [0, 1].
        mean: 3 channel means.
        std: 3 channel standard deviations.
    """
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - mean_t) / std_t


def erase(image: torch.Tensor, box: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    """A copy of ``image`` with the box ``(top, left, height, width)`` set to ``value``.

    Ours: ``value=0`` after normalisation, i.e. the ImageNet mean colour, as MGN-pytorch
    (``RandomErasing(mean=[0, 0, 0])`` after ``Normalize``) and torchvision's default.
    BoT and torchreid fill with (0.4914, 0.4822, 0.4465), CIFAR-10's mean, in normalised
    units.

    Args:
        image: ``(..., H, W)`` tensor.
        box: ``(top, left, height, width)`` in pixels.
        value: Fill value. Default 0.0.
    """
    top, left, height, width = box
    out = image.clone()
    out[..., top : top + height, left : left + width] = value
    return out


# --- random draws ---------------------------------------------------------------------


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def flip_param(p: float, generator: torch.Generator) -> bool:
    """Whether to flip: True with probability ``p``.

    Args:
        p: Flip probability in [0, 1].
        generator: Source of randomness.
    """
    return float(torch.rand((), generator=generator)) < p


def pad_crop_params(pad: int, generator: torch.Generator) -> tuple[int, int]:
    """Crop offsets ``(top, left)`` in the padded image, each uniform on ``[0, 2 * pad]``.

    Args:
        pad: Padding on each side (>= 0).
        generator: Source of randomness.
    """
    top, left = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return top, left


def random_erasing_params(
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 3.3),
    max_attempts: int = 100,
) -> tuple[int, int, int, int] | None:
    """Draw a random-erasing box (Zhong et al., "Random Erasing Data Augmentation", 2017).

    With probability ``p`` an attempt loop runs: area fraction ~ U(scale), aspect
    height / width ~ U(ratio) (uniform as in Zhong et al., BoT and torchreid; torchvision
    draws the aspect log-uniformly), box height = round(sqrt(area * aspect)), width =
    round(sqrt(area / aspect)); the box is kept if it fits strictly inside the image and,
    ours, if its rounded area is still within ``scale`` (so the erased fraction is exactly
    bounded). After ``max_attempts`` misses nothing is erased, as in the reference code.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        generator: Source of randomness.
        p: Probability of erasing. Default 0.5.
        scale: Range of the erased area as a fraction of the image. Default (0.02, 0.4).
        ratio: Range of the box's height / width. Default (0.3, 3.3).
        max_attempts: Tries before giving up. Default 100.

    Returns:
        ``(top, left, box_height, box_width)``, or None when nothing is erased.
    """
    if float(torch.rand((), generator=generator)) >= p:
        return None
    image_area = height * width
    for _ in range(max_attempts):
        area = _uniform(generator, *scale) * image_area
        aspect = _uniform(generator, *ratio)
        box_h = round(math.sqrt(area * aspect))
        box_w = round(math.sqrt(area / aspect))
        fits = 0 < box_h < height and 0 < box_w < width
        if fits and scale[0] <= box_h * box_w / image_area <= scale[1]:
            top = int(torch.randint(0, height - box_h + 1, (), generator=generator))
            left = int(torch.randint(0, width - box_w + 1, (), generator=generator))
            return top, left, box_h, box_w
    return None


# --- pipelines --------------------------------------------------------------------------


class TrainTransform:
    """Training pipeline: resize, flip, pad + crop, normalise, random erasing.

    Args:
        cfg: Sizes and probabilities.
        generator: Source of randomness. Default None: a generator seeded from
            ``torch.initial_seed()`` is created in each process on first use (see the module
            docstring). Pass one only with ``num_workers=0`` (tests, notebooks): each
            DataLoader worker would receive a copy of it in the same state and repeat the
            same augmentations.
    """

    def __init__(self, cfg: TransformConfig, generator: torch.Generator | None = None) -> None:
        self.cfg = cfg
        self._explicit = generator
        self._lazy: torch.Generator | None = None
        self._lazy_seed: int | None = None

    def _generator(self) -> torch.Generator:
        if self._explicit is not None:
            return self._explicit
        seed = torch.initial_seed()
        if self._lazy is None or self._lazy_seed != seed:
            # A new process (worker) or a re-seeded one: start a stream from its seed.
            self._lazy = torch.Generator().manual_seed(seed)
            self._lazy_seed = seed
        return self._lazy

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Augment one image.

        Args:
            image: ``(3, H, W)`` tensor, ``uint8`` or float in [0, 1].

        Returns:
            Float32 ``(3, cfg.height, cfg.width)`` tensor, normalised.
        """
        cfg, generator = self.cfg, self._generator()
        out = resize(to_float(image), cfg.height, cfg.width)
        if flip_param(cfg.flip_p, generator):
            out = hflip(out)
        if cfg.pad > 0:
            out = pad_crop(out, cfg.pad, *pad_crop_params(cfg.pad, generator))
        out = normalize(out, cfg.mean, cfg.std)
        box = random_erasing_params(
            cfg.height,
            cfg.width,
            generator,
            p=cfg.erasing_p,
            scale=cfg.erasing_scale,
            ratio=cfg.erasing_ratio,
        )
        return out if box is None else erase(out, box)


class TestTransform:
    """Test pipeline: resize and normalise; no randomness.

    Args:
        cfg: Sizes and normalisation statistics.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, cfg: TransformConfig) -> None:
        self.cfg = cfg

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Resize and normalise one image.

        Args:
            image: ``(3, H, W)`` tensor, ``uint8`` or float in [0, 1].

        Returns:
            Float32 ``(3, cfg.height, cfg.width)`` tensor, normalised.
        """
        out = resize(to_float(image), self.cfg.height, self.cfg.width)
        return normalize(out, self.cfg.mean, self.cfg.std)


def build_train_transform(
    cfg: TransformConfig, generator: torch.Generator | None = None
) -> TrainTransform:
    """The training pipeline for ``cfg`` (uint8 or float CHW -> normalised float CHW).

    Args:
        cfg: Sizes and probabilities.
        generator: Optional fixed source of randomness (only for ``num_workers=0``).
            Default None: per-process seeding from ``torch.initial_seed()``.
    """
    return TrainTransform(cfg, generator)


def build_test_transform(cfg: TransformConfig) -> TestTransform:
    """The test pipeline for ``cfg`` (uint8 or float CHW -> normalised float CHW).

    Args:
        cfg: Sizes and normalisation statistics.
    """
    return TestTransform(cfg)
