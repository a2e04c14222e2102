"""A training data pipeline that lives on the accelerator: a decoded image cache and batched augmentation.

The DataLoader path (:mod:`canlib.data.loader`) decodes JPEGs and augments every image one at a
time in CPU worker processes; on a fast GPU with few CPU cores that, not the model, sets the
training speed. This module removes the CPU from the training loop:

1. :class:`ImageCache` decodes the whole training set once into one ``uint8`` tensor
   ``(N, 3, H, W)`` at the model's input size (optionally saved to disk, so a second run skips
   decoding) and moves it to the device.
2. :class:`BatchedTrainAugment` runs the same steps as
   :class:`canlib.data.transforms.TrainTransform` (resize, flip, zero-pad + random crop,
   normalise, random erasing) on a whole ``(B, 3, h, w)`` batch with tensor operations, its
   random draws coming from one ``torch.Generator`` on the batch's device.
3. :func:`gpu_batches` indexes the cache with the sampler's batches and yields
   ``(images, pids)`` as the DataLoader path does.

Same distribution, not the same draws: a batch augmented here follows exactly the per-sample
distribution of the CPU pipeline (the tests compare the two statistically), but the random
streams differ, so the two paths never produce identical augmented images for one seed.

Ours, not the paper's: the paper does not say how its data were loaded; this is a speed
device only (issue 8).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from canlib.data.loader import Record
from canlib.data.transforms import TransformConfig, decode_image, resize, to_float
from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError

logger = logging.getLogger(__name__)

_CACHE_FORMAT = "canlib.ImageCache"
_CACHE_VERSION = 1


def cache_nbytes(num_images: int, height: int, width: int) -> int:
    """Bytes of the images of a cache of ``num_images`` RGB ``uint8`` images at ``height x width``."""
    return num_images * 3 * height * width


def check_cache_fits(
    num_images: int, height: int, width: int, free_bytes: int, where: str = "the device"
) -> None:
    """Refuse a cache that would take more than half of the device's free memory.

    The other half is left to the model, its activations and the optimiser. Falling back to
    the CPU pipeline silently is not an option: the pipeline decides the random draws, so two
    runs of one config would differ in a way their config hash does not record.

    Args:
        num_images: Training images N.
        height: Cache height (the model's input height).
        width: Cache width (the model's input width).
        free_bytes: Free memory of the device (``torch.cuda.mem_get_info(device)[0]``).
        where: The device's name, for the message.

    Raises:
        ConfigError: Naming the size needed, the memory free and the fix.
    """
    needed = cache_nbytes(num_images, height, width)
    if needed > free_bytes // 2:
        raise ConfigError(
            f"the decoded training images ({num_images:,} at {height}x{width}, uint8) need "
            f"{needed / 1e9:.2f} GB on {where}, more than half of its {free_bytes / 1e9:.2f} GB "
            "free (the rest is for training); train with --set data.pipeline=cpu, which decodes "
            "images per batch on the CPU"
        )


# --- the decoded image cache ------------------------------------------------------------


def decode_to_size(path: str | Path, height: int, width: int) -> torch.Tensor:
    """Decode an image and bring it to ``height x width`` as ``uint8``.

    An image already of that size is returned as decoded; another is resized with
    :func:`canlib.data.transforms.resize` (antialiased bilinear, the CPU pipeline's resize) and
    rounded back to ``uint8`` (half to even, as ``torch.round``).

    Args:
        path: Image file.
        height: Cache height in pixels.
        width: Cache width in pixels.

    Returns:
        ``uint8`` tensor ``(3, height, width)``.

    Raises:
        DatasetNotFoundError: If the file does not exist.
        DatasetError: If it cannot be decoded.
    """
    image = decode_image(path)
    if image.shape[-2:] == (height, width):
        return image
    # Antialiased bilinear stays within the input range, so the clamp only guards rounding.
    return resize(to_float(image), height, width).mul(255.0).round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True, eq=False)
class ImageCache:
    """The decoded training images, one ``uint8`` tensor, with their pids and camera ids.

    Size: the training engine caches at the model's input size (``data.height x data.width``),
    so every image is resized once, from its original file, exactly as the CPU pipeline and
    the test transform do (the only difference is the rounding of the resized pixels to
    ``uint8``, at most half a grey level), and a batch needs no resize at all. A smaller cache
    (Market-1501's native 128 x 64) would train DukeMTMC-reID, CUHK03 and MSMT17, whose crops
    are larger and vary in size, on blurrier images than it tests on; a per-image original
    size cannot be stacked into one tensor.

    Memory: ``N * 3 * H * W`` bytes. At 384 x 128 (147,456 B per image): Market-1501's
    12,936 training images take 1.91 GB (1.78 GiB), DukeMTMC-reID's 16,522 take 2.44 GB
    (2.27 GiB), CUHK03's 14,733 (labeled and detected) 2.17 GB, MSMT17's 32,621 4.81 GB.
    The engine refuses a cache larger than half the device's free memory
    (:func:`check_cache_fits`) and names ``--set data.pipeline=cpu``; building it also needs
    that much host memory, once.

    Build one with :meth:`build`, or :meth:`load_or_build` to reuse a saved cache.

    Args:
        images: ``uint8`` tensor ``(N, 3, h, w)``.
        pids: ``int64`` tensor ``(N,)``, the training identity of each image.
        camids: ``int64`` tensor ``(N,)``, the camera of each image.
        paths: The N record paths as strings, in record order (identify the cache on disk).

    Raises:
        DatasetError: If the shapes or dtypes disagree.
    """

    images: torch.Tensor
    pids: torch.Tensor
    camids: torch.Tensor
    paths: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise DatasetError(
                f"ImageCache images must be a uint8 (N, 3, h, w) tensor, got {self.images.dtype} "
                f"{tuple(self.images.shape)}."
            )
        for name in ("pids", "camids"):
            value = getattr(self, name)
            if value.dtype != torch.int64 or value.shape != (n,):
                raise DatasetError(
                    f"ImageCache {name} must be an int64 ({n},) tensor, got {value.dtype} "
                    f"{tuple(value.shape)}."
                )
        if self.images.shape[0] != n:
            raise DatasetError(f"ImageCache holds {self.images.shape[0]} images but {n} paths.")

    @classmethod
    def build(
        cls,
        records: Sequence[Record],
        height: int,
        width: int,
        *,
        num_threads: int | None = None,
        progress: bool = True,
    ) -> ImageCache:
        """Decode every record's image into a new cache (on CPU), in record order.

        Args:
            records: ``(path, pid, camid)`` tuples (e.g. ``dataset.train``).
            height: Cache height in pixels (the engine passes the model's input height).
            width: Cache width in pixels (the model's input width).
            num_threads: Decoding threads (PIL and torch release the GIL while decoding and
                resizing); 1 decodes in the calling thread. Default None: ``min(8, cpu count)``.
            progress: Show a tqdm bar. Default True.

        Raises:
            ConfigError: For a bad size or thread count, or no records.
            DatasetNotFoundError: If an image file is missing.
            DatasetError: If an image cannot be decoded.
        """
        _check_size(height, width)
        if num_threads is None:
            num_threads = min(8, os.cpu_count() or 1)
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ConfigError(f"num_threads must be a positive integer, got {num_threads!r}.")
        if len(records) == 0:
            raise ConfigError("ImageCache.build needs at least one record, got none.")
        paths = tuple(str(path) for path, _, _ in records)
        images = torch.empty((len(paths), 3, height, width), dtype=torch.uint8)
        bar = tqdm(total=len(paths), desc="decoding images", unit="img", disable=not progress)
        with bar:
            for index, image in enumerate(_decode_all(paths, height, width, num_threads)):
                images[index] = image
                bar.update(1)
        pids = torch.tensor([int(pid) for _, pid, _ in records], dtype=torch.int64)
        camids = torch.tensor([int(camid) for _, _, camid in records], dtype=torch.int64)
        return cls(images, pids, camids, paths)

    @property
    def height(self) -> int:
        """Cache height in pixels."""
        return int(self.images.shape[2])

    @property
    def width(self) -> int:
        """Cache width in pixels."""
        return int(self.images.shape[3])

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.images.device

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors (images, pids and camids)."""
        return self.images.nbytes + self.pids.nbytes + self.camids.nbytes

    def __len__(self) -> int:
        return len(self.paths)

    def to(self, device: torch.device | str) -> ImageCache:
        """The cache with its tensors on ``device`` (self if already there).

        Args:
            device: Target device, e.g. ``"cuda"``.
        """
        device = torch.device(device)
        if _same_device(self.images.device, device):
            return self
        return ImageCache(
            self.images.to(device), self.pids.to(device), self.camids.to(device), self.paths
        )

    def matches(self, records: Sequence[Record], height: int, width: int) -> bool:
        """Whether this cache holds exactly ``records`` (paths, pids, camids, order) at that size.

        Args:
            records: ``(path, pid, camid)`` tuples.
            height: Expected cache height.
            width: Expected cache width.
        """
        if (self.height, self.width) != (height, width) or len(records) != len(self):
            return False
        if tuple(str(path) for path, _, _ in records) != self.paths:
            return False
        pids = [int(pid) for _, pid, _ in records]
        camids = [int(camid) for _, _, camid in records]
        return pids == self.pids.tolist() and camids == self.camids.tolist()

    def save(self, path: str | Path) -> None:
        """Write the cache with ``torch.save`` as a plain dict of tensors, paths and sizes.

        The file is written next to ``path`` and renamed into place, so an interrupted save
        never leaves a truncated cache behind.

        Args:
            path: Output file (e.g. ``<data root>/train_cache_128x64.pt``).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _CACHE_FORMAT,
            "version": _CACHE_VERSION,
            "height": self.height,
            "width": self.width,
            "images": self.images.cpu(),
            "pids": self.pids.cpu(),
            "camids": self.camids.cpu(),
            "paths": list(self.paths),
        }
        # A name per process: two processes saving the same cache at once (two notebooks)
        # each rename a whole file of their own; the last rename wins, both are valid.
        partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
        try:
            torch.save(payload, partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    @classmethod
    def load(
        cls,
        path: str | Path,
        records: Sequence[Record] | None = None,
        height: int | None = None,
        width: int | None = None,
    ) -> ImageCache:
        """Read a cache written by :meth:`save` (``weights_only=True``, onto the CPU).

        Args:
            path: Cache file.
            records: When given, the records the cache must hold (paths, pids, camids, in
                order). Default None: no check.
            height: When given, the cache height it must have. Default None.
            width: When given, the cache width it must have. Default None.

        Raises:
            DatasetNotFoundError: If the file does not exist.
            DatasetError: If it is not a readable canlib image cache, or it does not match
                ``records`` / ``height`` / ``width`` (the caller should rebuild it).
        """
        path = Path(path)
        if not path.is_file():
            raise DatasetNotFoundError(f"Image cache not found: {path}.")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for a corrupt or foreign file
            raise DatasetError(f"Cannot read image cache {path}: {error}") from error
        if not isinstance(payload, dict) or payload.get("format") != _CACHE_FORMAT:
            raise DatasetError(f"{path} is not a canlib image cache (no {_CACHE_FORMAT!r} tag).")
        if payload.get("version") != _CACHE_VERSION:
            raise DatasetError(
                f"Image cache {path} has version {payload.get('version')!r}, expected "
                f"{_CACHE_VERSION}; rebuild it."
            )
        cache = cls(payload["images"], payload["pids"], payload["camids"], tuple(payload["paths"]))
        expected = (
            cache.height if height is None else height,
            cache.width if width is None else width,
        )
        if (cache.height, cache.width) != expected:
            raise DatasetError(
                f"Image cache {path} is {cache.height}x{cache.width}, expected "
                f"{expected[0]}x{expected[1]}; rebuild it."
            )
        if records is not None and not cache.matches(records, *expected):
            raise DatasetError(
                f"Image cache {path} holds {len(cache)} images that do not match the "
                f"{len(records)} records given (paths, pids, camids or order differ); rebuild it."
            )
        return cache

    @classmethod
    def load_or_build(
        cls,
        path: str | Path,
        records: Sequence[Record],
        height: int,
        width: int,
        *,
        num_threads: int | None = None,
        progress: bool = True,
    ) -> ImageCache:
        """Load the cache at ``path`` if it matches ``records`` and the size, else build and save it.

        Args:
            path: Cache file, read if valid and (re)written otherwise.
            records: ``(path, pid, camid)`` tuples the cache must hold.
            height: Cache height.
            width: Cache width.
            num_threads: Decoding threads for a rebuild (see :meth:`build`).
            progress: Show a tqdm bar while decoding. Default True.
        """
        try:
            return cls.load(path, records, height, width)
        except DatasetError as error:  # includes DatasetNotFoundError
            logger.info("Building the image cache (%s).", error)
        cache = cls.build(records, height, width, num_threads=num_threads, progress=progress)
        cache.save(path)
        logger.info("Saved %d images (%.0f MB) to %s.", len(cache), cache.nbytes / 1e6, path)
        return cache


def _decode_all(
    paths: Sequence[str], height: int, width: int, num_threads: int
) -> Iterable[torch.Tensor]:
    """Decoded images in the order of ``paths``."""
    if num_threads == 1:
        return (decode_to_size(path, height, width) for path in paths)
    pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="canlib-decode")

    def ordered() -> Iterator[torch.Tensor]:
        with pool:
            # map keeps input order; chunks keep the queue of pending futures bounded.
            chunk = 256 * num_threads
            for start in range(0, len(paths), chunk):
                yield from pool.map(
                    lambda p: decode_to_size(p, height, width), paths[start : start + chunk]
                )

    return ordered()


def _check_size(height: object, width: object) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"cache {name} must be a positive integer, got {value!r}.")


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Equal devices, where ``cuda`` without an index means the current CUDA device."""
    if a.type != b.type:
        return False
    if a.index is None or b.index is None:
        current = torch.cuda.current_device() if a.type == "cuda" else None
        return (a.index if a.index is not None else current) == (
            b.index if b.index is not None else current
        )
    return a.index == b.index


# --- batched augmentation ---------------------------------------------------------------


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


def draw_flips(batch: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """Per-sample flips, True with probability ``p`` (as :func:`canlib.data.transforms.flip_param`).

    Args:
        batch: Number of samples B.
        p: Flip probability in [0, 1].
        generator: Source of randomness; the result lives on its device.

    Returns:
        ``bool`` ``(B,)``.
    """
    return torch.rand(batch, generator=generator, device=generator.device) < p


def draw_crop_offsets(
    batch: int, pad: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample crop offsets ``(top, left)``, each uniform on ``[0, 2 * pad]``.

    As :func:`canlib.data.transforms.pad_crop_params`; with ``pad == 0`` both are zeros and
    nothing is drawn.

    Args:
        batch: Number of samples B.
        pad: Padding on each side (>= 0).
        generator: Source of randomness; the results live on its device.

    Returns:
        ``(top, left)``, ``int64`` ``(B,)`` each.
    """
    device = generator.device
    if pad == 0:
        zeros = torch.zeros(batch, dtype=torch.int64, device=device)
        return zeros, zeros.clone()
    offsets = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator, device=device)
    return offsets[0], offsets[1]


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
    """Random-erasing boxes for a batch, distributed as :func:`canlib.data.transforms.random_erasing_params`.

    Each sample erases with probability ``p``; then all ``max_attempts`` attempts are drawn
    at once (area fraction ~ U(scale), aspect height / width ~ U(ratio), box height
    ``round(sqrt(area * aspect))``, width ``round(sqrt(area / aspect))``, kept if it fits
    strictly and its rounded area fraction lies within ``scale``) and the first valid one is
    taken. Attempts are independent, so the first valid of all drawn has exactly the
    distribution of the sequential loop that stops at it; a sample with no valid attempt
    erases nothing, as the loop does after ``max_attempts`` misses. The position is uniform
    over the valid ones: top on ``[0, height - box_h]``, left on ``[0, width - box_w]``.

    Box arithmetic is in float64, as the CPU version's Python floats (rounding ties go to
    even in both).

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
    box_h = box_h.gather(1, first).squeeze(1).to(torch.int64)
    box_w = box_w.gather(1, first).squeeze(1).to(torch.int64)
    box_h = torch.where(erase, box_h, 0)
    box_w = torch.where(erase, box_w, 0)
    position = torch.rand((2, batch), generator=generator, device=device, dtype=torch.float64)
    # floor(u * n) is uniform on {0, ..., n - 1}; the clamp guards u * n rounding up to n.
    top = _uniform_index(position[0], height - box_h + 1)
    left = _uniform_index(position[1], width - box_w + 1)
    boxes = torch.stack([top, left, box_h, box_w], dim=1) * erase.unsqueeze(1)
    return erase, boxes


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

    Equal, sample by sample, to ``pad_crop(hflip(x) if flip else x, pad, top, left)`` of
    :mod:`canlib.data.transforms`. Output pixel ``(i, j)`` reads source row ``top - pad + i`` and
    source column ``c = left - pad + j`` (``W - 1 - c`` when flipped: the flipped image's
    column ``c`` is the image's ``W - 1 - c``), or is 0 where that falls in the padding. No
    padded copy is made: the gather reads clamped positions and the padding is zeroed after.

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


def erase_boxes(
    images: torch.Tensor, erase: torch.Tensor, boxes: torch.Tensor, value: float = 0.0
) -> torch.Tensor:
    """Set each sample's box ``(top, left, height, width)`` to ``value`` where ``erase``.

    Equal, sample by sample, to :func:`canlib.data.transforms.erase`; done with one mask.

    Args:
        images: ``(B, C, H, W)`` tensor.
        erase: ``bool`` ``(B,)``.
        boxes: ``int64`` ``(B, 4)``, rows ``(top, left, box_height, box_width)``.
        value: Fill value. Default 0.0 (the mean colour after normalisation).

    Returns:
        A new ``(B, C, H, W)`` tensor.
    """
    return images.masked_fill(box_mask(erase, boxes, *images.shape[-2:]), value)


class BatchedTrainAugment:
    """The training pipeline of :class:`canlib.data.transforms.TrainTransform`, on whole batches.

    Steps, as the CPU pipeline: ``uint8`` to float in [0, 1] -> resize to ``(cfg.height,
    cfg.width)`` (the same antialiased bilinear) -> flip with ``cfg.flip_p`` -> zero-pad
    ``cfg.pad`` and crop at offsets uniform on ``[0, 2 * pad]`` -> normalise -> random erasing
    (``cfg.erasing_*``; value 0 after normalisation). No Python loop runs over samples: the
    draws are ``(B,)`` tensors (:meth:`draw`), the flip and crop one gather, the erasing one
    mask (:meth:`apply`); normalising and erasing work in place on the gathered batch. Everything runs on the device of the input and the generator.

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
        flip = draw_flips(batch, cfg.flip_p, generator)
        top, left = draw_crop_offsets(batch, cfg.pad, generator)
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
        mean = torch.tensor(cfg.mean, dtype=out.dtype, device=out.device).view(3, 1, 1)
        std = torch.tensor(cfg.std, dtype=out.dtype, device=out.device).view(3, 1, 1)
        # (x - mean) / std, the same arithmetic as canlib.data.transforms.normalize.
        out.sub_(mean).div_(std)
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
        if not _same_device(images.device, generator.device):
            raise ValueError(
                f"generator must live on the images' device {images.device}, got one on "
                f"{generator.device}; create it with torch.Generator(device=...)."
            )
        return self.apply(images, self.draw(images.shape[0], generator))


# --- the training iterator -------------------------------------------------------------


def gpu_batches(
    cache: ImageCache,
    sampler: Iterable[Sequence[int]],
    augment: BatchedTrainAugment,
    device: torch.device | str,
    generator: torch.Generator,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, pids)`` for the sampler's batches, indexed and augmented on ``device``.

    The replacement of ``build_train_loader``'s DataLoader: call ``sampler.set_epoch(e)``
    (or ``set_position``) first, as for the DataLoader. Only the batch's indices cross from
    the CPU; decoding was done once by the cache and augmentation runs on the device.

    Randomness: the draws come from ``generator`` in sampler order; seed it per epoch (and,
    under DDP, per rank) for a repeatable run. A run resumed mid-epoch sees the same images
    with different draws unless the generator is advanced, as with the DataLoader path.

    Args:
        cache: The training images, already on ``device`` (``cache.to(device)``), indexed
            as the sampler's record indices.
        sampler: Yields lists of record indices (e.g. :class:`canlib.data.sampling.PKSampler`).
        augment: The batched training pipeline.
        device: Where the batches are made.
        generator: Source of randomness on ``device``.

    Yields:
        ``images`` float32 ``(B, 3, H, W)`` and ``pids`` int64 ``(B,)``, both on ``device``.

    Raises:
        ValueError: If the cache is not on ``device``.
    """
    device = torch.device(device)
    if not _same_device(cache.device, device):
        raise ValueError(
            f"the image cache is on {cache.device} but batches are wanted on {device}; "
            f"move it once with cache.to(device)."
        )
    for batch in sampler:
        index = torch.as_tensor(batch, dtype=torch.int64).to(device, non_blocking=True)
        yield (
            augment(cache.images.index_select(0, index), generator),
            cache.pids.index_select(0, index),
        )
