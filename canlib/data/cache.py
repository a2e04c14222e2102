"""The decoded training images as one ``uint8`` tensor, built once and reused (pipeline gpu).

The DataLoader path (:mod:`canlib.data.loader`) decodes every JPEG again each epoch on the
CPU, which, on a fast GPU with few CPU cores, sets the training speed. :class:`ImageCache`
decodes the training set once into one ``(N, 3, H, W)`` tensor on the device (saved to disk
for the next run); :func:`cached_batches` indexes it with the sampler's batches. Both paths
decode with :func:`canlib.data.transforms.decode_to_size` and augment with the same
:class:`canlib.data.transforms.TrainAugment`, so for one seed they train on identical batches.
Ours, a speed device only: the paper does not say how its data were loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from canlib.data.loader import Record
from canlib.data.transforms import decode_to_size, same_device
from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError

logger = logging.getLogger(__name__)

_CACHE_FORMAT = "canlib.ImageCache"
_CACHE_VERSION = 2  # 2: resized pixels rounded halves-up in float64 (same on every CPU)


def cache_nbytes(num_images: int, height: int, width: int) -> int:
    """Bytes of ``num_images`` RGB ``uint8`` images at ``height x width``."""
    return num_images * 3 * height * width


def check_cache_fits(
    num_images: int, height: int, width: int, free_bytes: int, where: str = "the device"
) -> None:
    """Refuse a cache that would take more than half of the device's free memory.

    The other half is left to the model, its activations and the optimiser. It refuses
    rather than falling back to the DataLoader pipeline: both train on the same batches, but
    that one is several times slower on a GPU, which the user should choose knowingly.

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


@dataclass(frozen=True, eq=False)
class ImageCache:
    """The decoded training images, one ``uint8`` tensor, with their pids and camera ids.

    Size: the engine caches at the model's input size (``data.height x data.width``), so every
    image is resized once from its file, as the DataLoader pipeline does per batch (the same
    pixels) and the test transform does (but for the ``uint8`` rounding, at most half a grey
    level). A smaller cache (Market-1501's native 128 x 64) would train the datasets with
    larger crops on blurrier images than they are tested on; original sizes cannot be stacked.

    Memory: ``N * 3 * H * W`` bytes, at 384 x 128: Market-1501 1.91 GB, DukeMTMC-reID 2.44 GB,
    CUHK03 (both subsets) 2.17 GB, MSMT17 4.81 GB, once in host memory while building. The
    engine refuses more than half the device's free memory (:func:`check_cache_fits`).

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
        if same_device(self.images.device, device):
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
        height = cache.height if height is None else height
        width = cache.width if width is None else width
        if (cache.height, cache.width) != (height, width):
            raise DatasetError(
                f"Image cache {path} is {cache.height}x{cache.width}, expected "
                f"{height}x{width}; rebuild it."
            )
        if records is not None and not cache.matches(records, height, width):
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
        """Load the cache at ``path`` if it matches ``records`` and the size, else build, save it.

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
) -> Iterator[torch.Tensor]:
    """Decoded images in the order of ``paths``."""
    decode = partial(decode_to_size, height=height, width=width)
    if num_threads == 1:
        yield from map(decode, paths)
        return
    with ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="canlib-decode") as pool:
        # map keeps input order; chunks keep the queue of pending futures bounded.
        chunk = 256 * num_threads
        for start in range(0, len(paths), chunk):
            yield from pool.map(decode, paths[start : start + chunk])


def _check_size(height: object, width: object) -> None:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"cache {name} must be a positive integer, got {value!r}.")


def cached_batches(
    cache: ImageCache, sampler: Iterable[Sequence[int]]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the ``uint8`` images and pids of the sampler's batches, on the cache's device.

    Only the batch's indices cross from the CPU. Call ``sampler.set_epoch(e)`` first, as for
    a DataLoader.

    Args:
        cache: The training images, indexed as the sampler's record indices.
        sampler: Yields lists of record indices (e.g. :class:`canlib.data.sampling.PKSampler`).

    Yields:
        ``images`` ``uint8`` ``(B, 3, H, W)`` and ``pids`` ``int64`` ``(B,)``.
    """
    for batch in sampler:
        index = torch.as_tensor(batch, dtype=torch.int64).to(cache.device, non_blocking=True)
        yield cache.images.index_select(0, index), cache.pids.index_select(0, index)
