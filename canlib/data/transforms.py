"""Decoding and augmentation of person crops: one implementation, on batches, on any device.

Images are decoded (:func:`decode_image`, :func:`decode_to_size`) in DataLoader workers
(``data.pipeline=cpu``) or once into a cache (``data.pipeline=gpu``, :mod:`canlib.data.cache`);
:class:`TrainAugment` then augments whole ``(B, 3, H, W)`` batches on the CPU or the
accelerator, the same code and draws whichever pipeline fed it.

Design: each augmentation is a *draw* from an explicit ``torch.Generator`` (``(B,)`` tensors)
and a deterministic *apply*. The engine seeds one generator per (seed, epoch, rank), so a
resumed run redraws exactly what the uninterrupted one drew. torchvision's ``transforms.v2``
and ``kornia.augmentation`` draw from torch's global RNG and define random erasing differently
(log-uniform aspect; one clipped box instead of Zhong et al.'s retry loop);
``benchmarks/augment_speed.py`` measures both against this module.

Pipelines (the paper names only the 384 x 128 input, §4.6; the rest is ours, in the order of
BoT, Luo et al. 2019): training in :class:`TrainAugment`, test in :class:`TestTransform`.
"""

from __future__ import annotations

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
    return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_to_size(path: str | Path, height: int, width: int) -> torch.Tensor:
    """Decode an image and bring it to ``height x width`` as ``uint8``.

    An image already of that size is returned as decoded; another is resized with
    :func:`resize` (antialiased bilinear, as the test transform, in float64) and rounded back to
    ``uint8``, halves up: at most half a grey level from the test path's pixels, and the same
    pixels on every CPU.

    Args:
        path: Image file.
        height: Output height in pixels.
        width: Output width in pixels.

    Returns:
        ``uint8`` tensor ``(3, height, width)``.

    Raises:
        DatasetNotFoundError, DatasetError: As :func:`decode_image`.
    """
    image = decode_image(path)
    if image.shape[-2:] == (height, width):
        return image
    # About 3% of resized values are exact halves (the filter's weights are simple fractions);
    # each CPU's kernels land a few ulps either side of them, so plain rounding gave different
    # pixels on AVX-512 and on CPUs without vector units. In float64 the ulps are 1e-13 and a
    # bias of 1e-6 rounds every half up, on every machine. Antialiased bilinear stays within
    # the input range, so the clamp only guards the bias.
    resized = resize(image.to(torch.float64) / 255.0, height, width) * 255.0
    return (resized + (0.5 + 1e-6)).floor().clamp(0, 255).to(torch.uint8)


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


def normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(image - mean) / std`` per channel.

    Args:
        image: Float ``(..., 3, H, W)`` tensor in [0, 1].
        mean: 3 channel means.
        std: 3 channel standard deviations.
    """
    return (image - _per_channel(mean, image)) / _per_channel(std, image)


def _per_channel(values: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """3 channel values as a ``(3, 1, 1)`` tensor of ``like``'s dtype and device."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(3, 1, 1)


# --- batched training augmentation ------------------------------------------------------


@dataclass(frozen=True)
class AugmentParams:
    """The random draws of one batch, one entry per sample (all on the batch's device).

    Args:
        flip: ``bool`` ``(B,)``, whether to mirror left-right.
        top: ``int64`` ``(B,)``, crop row in the zero-padded image, in ``[0, 2 * pad]``.
        left: ``int64`` ``(B,)``, crop column in the zero-padded image, in ``[0, 2 * pad]``.
        erase: ``bool`` ``(B,)``, whether a box is erased.
        boxes: ``int64`` ``(B, 4)``, ``(top, left, height, width)`` of the erased box; rows
            with ``erase`` False are zeros.
    """

    flip: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    erase: torch.Tensor
    boxes: torch.Tensor


def draw_erasing_boxes(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    *,
    p: float = 0.5,
    scale: tuple[float, float] = (0.02, 0.4),
    ratio: tuple[float, float] = (0.3, 3.3),
    max_attempts: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random-erasing boxes for a batch (Zhong et al., "Random Erasing Data Augmentation", 2017).

    Each sample erases with probability ``p``. All ``max_attempts`` attempts are drawn at once
    (area fraction ~ U(scale), aspect height / width ~ U(ratio), box
    ``round(sqrt(area * aspect)) x round(sqrt(area / aspect))``, valid if it fits strictly and
    its rounded area fraction lies within ``scale``) and the first valid one is taken: the
    distribution of the sequential retry loop (tests/test_transforms.py checks it), and no box
    when all attempts fail. The position is uniform over the places the box fits. The aspect is
    uniform, as in Zhong et al., BoT and torchreid (torchvision: log-uniform); the rounded-area
    check is ours, so the erased fraction is exactly bounded. Box arithmetic is in float64
    (rounding ties go to even).

    Args:
        batch: Number of samples B.
        height: Image height in pixels.
        width: Image width in pixels.
        generator: Source of randomness; the results live on its device.
        p: Probability of erasing. Default 0.5.
        scale: Range of the erased area as a fraction of the image. Default (0.02, 0.4).
        ratio: Range of the box's height / width. Default (0.3, 3.3).
        max_attempts: Attempts per sample. Default 100.

    Returns:
        ``(erase, boxes)``: ``bool`` ``(B,)`` and ``int64`` ``(B, 4)`` rows
        ``(top, left, box_height, box_width)`` (zeros where ``erase`` is False).
    """
    erase, box_h, box_w = _erasing_sizes(
        batch, height, width, generator, p, scale, ratio, max_attempts
    )
    position = torch.rand(
        (2, batch), generator=generator, device=generator.device, dtype=torch.float64
    )
    top = _uniform_index(position[0], height - box_h + 1)
    left = _uniform_index(position[1], width - box_w + 1)
    boxes = torch.stack([top, left, box_h, box_w], dim=1) * erase.unsqueeze(1)
    return erase, boxes


def _erasing_sizes(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    p: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    max_attempts: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whether each sample erases, and its box's height and width (0 where it does not)."""
    device = generator.device
    wanted = torch.rand(batch, generator=generator, device=device) < p
    draws = torch.rand(
        (2, batch, max_attempts), generator=generator, device=device, dtype=torch.float64
    )
    image_area = height * width
    area = (scale[0] + (scale[1] - scale[0]) * draws[0]) * image_area
    aspect = ratio[0] + (ratio[1] - ratio[0]) * draws[1]
    box_h = torch.sqrt(area * aspect).round()
    box_w = torch.sqrt(area / aspect).round()
    fraction = box_h * box_w / image_area
    valid = (
        (box_h > 0)
        & (box_h < height)
        & (box_w > 0)
        & (box_w < width)
        & (fraction >= scale[0])
        & (fraction <= scale[1])
    )
    # argmax returns the first maximal index: the first valid attempt.
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)
    erase = wanted & valid.any(dim=1)
    box_h = torch.where(erase, box_h.gather(1, first).squeeze(1).to(torch.int64), 0)
    box_w = torch.where(erase, box_w.gather(1, first).squeeze(1).to(torch.int64), 0)
    return erase, box_h, box_w


def _uniform_index(u: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``floor(u * count)`` clamped to ``count - 1``: uniform on ``{0, ..., count - 1}``."""
    return torch.minimum((u * count).floor().to(torch.int64), count - 1)


def flip_pad_crop(
    images: torch.Tensor,
    flip: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    pad: int,
) -> torch.Tensor:
    """Per-sample flip, then zero-pad ``pad`` and crop back at ``(top, left)``, in one gather.

    Zero is black before normalisation, as in BoT (``T.Pad`` on the PIL image). Output pixel
    ``(i, j)`` reads source row ``top - pad + i`` and source column ``c = left - pad + j``
    (``W - 1 - c`` when flipped: the flipped image's column ``c`` is the image's ``W - 1 - c``),
    or is 0 where that falls in the padding. No padded copy is made: the gather reads clamped
    positions and the padding is zeroed after.

    Args:
        images: ``(B, C, H, W)`` tensor.
        flip: ``bool`` ``(B,)``.
        top: ``int64`` ``(B,)`` in ``[0, 2 * pad]``.
        left: ``int64`` ``(B,)`` in ``[0, 2 * pad]``.
        pad: Padding on each side (>= 0).

    Returns:
        A new contiguous ``(B, C, H, W)`` tensor.
    """
    batch, channels, height, width = images.shape
    device = images.device
    rows = top.view(batch, 1) - pad + torch.arange(height, device=device)
    cols = left.view(batch, 1) - pad + torch.arange(width, device=device)
    cols = torch.where(flip.view(batch, 1), width - 1 - cols, cols)
    inside = ((rows >= 0) & (rows < height)).view(batch, 1, height, 1) & (
        (cols >= 0) & (cols < width)
    ).view(batch, 1, 1, width)
    # One flat index per output pixel into its sample's (H * W) plane, shared by channels.
    row_start = rows.clamp(0, height - 1).view(batch, height, 1) * width
    flat = row_start + cols.clamp(0, width - 1).view(batch, 1, width)
    index = flat.view(batch, 1, height * width).expand(batch, channels, height * width)
    out = images.reshape(batch, channels, height * width).gather(2, index)
    return out.view(batch, channels, height, width).masked_fill_(~inside, 0)


def box_mask(erase: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where each sample's box ``(top, left, box_height, box_width)`` lies, if ``erase``.

    Args:
        erase: ``bool`` ``(B,)``.
        boxes: ``int64`` ``(B, 4)``, rows ``(top, left, box_height, box_width)``.
        height: Image height H.
        width: Image width W.

    Returns:
        ``bool`` ``(B, 1, H, W)``, broadcastable over channels.
    """
    batch = erase.shape[0]
    device = erase.device
    top, left, box_h, box_w = (boxes[:, i].view(batch, 1) for i in range(4))
    rows = torch.arange(height, device=device).view(1, height)
    cols = torch.arange(width, device=device).view(1, width)
    in_rows = (rows >= top) & (rows < top + box_h)
    in_cols = (cols >= left) & (cols < left + box_w)
    return (in_rows.unsqueeze(2) & in_cols.unsqueeze(1) & erase.view(batch, 1, 1)).unsqueeze(1)


class TrainAugment:
    """The training augmentation, on whole batches, on the batch's device.

    Steps: ``uint8`` to float in [0, 1] -> resize to ``(cfg.height, cfg.width)`` (the same
    antialiased bilinear) -> flip with ``cfg.flip_p`` -> zero-pad ``cfg.pad`` and crop at offsets
    uniform on ``[0, 2 * pad]`` -> normalise -> random erasing (``cfg.erasing_*``; value 0 after
    normalisation, i.e. the ImageNet mean colour, as MGN-pytorch and torchvision; BoT and torchreid
    fill with CIFAR-10's mean). No Python loop runs over samples: the draws are ``(B,)`` tensors
    (:meth:`draw`), the flip and crop one gather, the erasing one mask (:meth:`apply`).

    Args:
        cfg: Sizes, probabilities and normalisation statistics.
        channels_last: Return the batch in channels-last memory format (what
            ``TrainConfig.channels_last`` feeds the model). Default False: contiguous NCHW.
    """

    def __init__(self, cfg: TransformConfig, channels_last: bool = False) -> None:
        self.cfg = cfg
        self.channels_last = channels_last

    def draw(self, batch: int, generator: torch.Generator) -> AugmentParams:
        """Draw the random parameters of ``batch`` samples on the generator's device.

        Args:
            batch: Number of samples B.
            generator: Source of randomness.
        """
        cfg = self.cfg
        device = generator.device
        flip = torch.rand(batch, generator=generator, device=device) < cfg.flip_p
        if cfg.pad == 0:  # no offsets to draw
            top = torch.zeros(batch, dtype=torch.int64, device=device)
            left = top.clone()
        else:
            top, left = torch.randint(
                0, 2 * cfg.pad + 1, (2, batch), generator=generator, device=device
            )
        erase, boxes = draw_erasing_boxes(
            batch,
            cfg.height,
            cfg.width,
            generator,
            p=cfg.erasing_p,
            scale=cfg.erasing_scale,
            ratio=cfg.erasing_ratio,
        )
        return AugmentParams(flip, top, left, erase, boxes)

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Augment a batch with given draws (deterministic).

        Args:
            images: ``(B, 3, h, w)`` tensor, ``uint8`` or float in [0, 1], any size h x w.
            params: Draws for the B samples, on the images' device.

        Returns:
            Float32 ``(B, 3, cfg.height, cfg.width)``, normalised.
        """
        cfg = self.cfg
        if images.shape[-2:] == (cfg.height, cfg.width):
            # No resize: move the (4x smaller) uint8 pixels, then convert; to_float is
            # elementwise and maps the zero padding to 0.0, so the result is the same.
            out = to_float(flip_pad_crop(images, params.flip, params.top, params.left, cfg.pad))
        else:
            out = resize(to_float(images), cfg.height, cfg.width)
            out = flip_pad_crop(out, params.flip, params.top, params.left, cfg.pad)
        # Both branches end in a new tensor, so the rest works in place: on CPU, fresh
        # batch-sized buffers (page faults, cache misses) cost more than the arithmetic.
        out.sub_(_per_channel(cfg.mean, out)).div_(_per_channel(cfg.std, out))  # as normalize()
        out.masked_fill_(box_mask(params.erase, params.boxes, cfg.height, cfg.width), 0.0)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return out.contiguous(memory_format=memory_format)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch, drawing its parameters from ``generator``.

        Args:
            images: ``(B, 3, h, w)`` tensor, ``uint8`` or float in [0, 1], on any device.
            generator: Source of randomness on the same device as ``images``.

        Returns:
            Float32 ``(B, 3, cfg.height, cfg.width)``, normalised.

        Raises:
            ValueError: If ``images`` is not ``(B, 3, h, w)`` or the generator lives on
                another device.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images must be a (B, 3, h, w) batch, got shape {tuple(images.shape)}."
            )
        if not same_device(images.device, generator.device):
            raise ValueError(
                f"generator must live on the images' device {images.device}, got one on "
                f"{generator.device}; create it with torch.Generator(device=...)."
            )
        return self.apply(images, self.draw(images.shape[0], generator))


def same_device(a: torch.device, b: torch.device) -> bool:
    """Equal devices, where ``cuda`` without an index means the current CUDA device."""
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        current = torch.cuda.current_device() if a.type == "cuda" else None
        return (a.index if a.index is not None else current) == (
            b.index if b.index is not None else current
        )
    return a.index == b.index


# --- test pipeline ----------------------------------------------------------------------


class TestTransform:
    """Test pipeline: resize and normalise, in float (no ``uint8`` rounding); no randomness.

    Args:
        cfg: Sizes and normalisation statistics.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, cfg: TransformConfig) -> None:
        self.cfg = cfg

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Resize and normalise one image or a batch.

        Args:
            image: ``(3, H, W)`` or ``(B, 3, H, W)`` tensor, ``uint8`` or float in [0, 1].

        Returns:
            Float32 ``(3, cfg.height, cfg.width)`` (or batched) tensor, normalised.
        """
        out = resize(to_float(image), self.cfg.height, self.cfg.width)
        return normalize(out, self.cfg.mean, self.cfg.std)


def build_test_transform(cfg: TransformConfig) -> TestTransform:
    """The test pipeline for ``cfg`` (uint8 or float CHW -> normalised float CHW).

    Args:
        cfg: Sizes and normalisation statistics.
    """
    return TestTransform(cfg)
