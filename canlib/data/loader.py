"""Datasets and DataLoaders over ``(path, pid, camid)`` records.

Images are decoded in the DataLoader workers; batches are collated by PyTorch's default
collate into ``(images (B, 3, H, W), pids (B,), camids (B,), indices (B,))``. The training
loader only decodes (to the model's input size, as ``uint8``): augmentation runs on the whole
batch afterwards (:class:`canlib.data.transforms.TrainAugment`), from the engine's generator
seeded per (seed, epoch), so no randomness lives in the workers and the number of workers
never changes what a seeded run draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from canlib.data.transforms import decode_image, decode_to_size
from canlib.errors import ConfigError

Record = tuple[str | Path, int, int]


class ImageDataset(Dataset):
    """Decodes and transforms the images of a list of records.

    Args:
        records: ``(path, pid, camid)`` tuples.
        transform: Callable from a ``uint8`` ``(3, H, W)`` tensor to the model input, or
            None to return the decoded tensor as is.
        decode: Callable from a path to a ``uint8`` ``(3, H, W)`` tensor. Default
            :func:`canlib.data.transforms.decode_image`.
    """

    def __init__(
        self,
        records: Sequence[Record],
        transform: Callable[[torch.Tensor], torch.Tensor] | None,
        decode: Callable[[str | Path], torch.Tensor] = decode_image,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.decode = decode

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int]:
        """Returns ``(image, pid, camid, index)`` of record ``index``."""
        path, pid, camid = self.records[index]
        image = self.decode(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(pid), int(camid), int(index)


def _check_workers(num_workers: int) -> None:
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ConfigError(f"num_workers must be a non-negative integer, got {num_workers!r}.")


def build_train_loader(
    records: Sequence[Record],
    sampler: Sampler[list[int]],
    height: int,
    width: int,
    num_workers: int = 2,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader of the sampler's batches (e.g. ``PKSampler``), decoded to ``height x width``.

    Yields ``uint8`` images, not augmented: pass them to
    :class:`canlib.data.transforms.TrainAugment`. Call ``sampler.set_epoch(e)`` (or
    ``set_position``) before iterating each epoch.

    Args:
        records: Training ``(path, pid, camid)`` tuples, indexed as the sampler's pids.
        sampler: Batch sampler yielding lists of record indices.
        height: Model input height in pixels.
        width: Model input width in pixels.
        num_workers: Decoding processes; 0 decodes in the main process. Default 2.
        pin_memory: Pin batches for faster host-to-GPU copies. Default None: when CUDA is
            available.
    """
    _check_workers(num_workers)
    return DataLoader(
        ImageDataset(records, None, partial(decode_to_size, height=height, width=width)),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )


def build_test_loader(
    records: Sequence[Record],
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 128,
    num_workers: int = 2,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader over records in their order, every record once (last batch may be short).

    Args:
        records: Query or gallery ``(path, pid, camid)`` tuples.
        transform: Test transform (e.g. ``build_test_transform(cfg)``).
        batch_size: Images per batch. Default 128.
        num_workers: Decoding processes; 0 decodes in the main process. Default 2.
        pin_memory: Pin batches for faster host-to-GPU copies. Default None: when CUDA is
            available.
    """
    _check_workers(num_workers)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return DataLoader(
        ImageDataset(records, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )
