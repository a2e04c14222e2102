"""P x K identity sampling for metric-learning losses, single-process and distributed.

A P x K batch holds P distinct identities with K images each (paper §4.6: P=8, K=4, a batch
of 32), so that batch-hard triplet and center losses always see positives and negatives.

Design (ours): MGN-pytorch's and torchreid's samplers draw from the global ``random`` and NumPy
generators, keep a partial last batch or let the epoch length vary. :class:`PKSampler` yields
only full batches, has an exact epoch length, and its batch sequence is a pure function of
``(seed, epoch)``, so a resumed run continues with exactly the batches it would have seen and
every DDP rank agrees on the global batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from canlib.errors import ConfigError
from canlib.rules import EPOCH_KINDS


class PKSampler(Sampler[list[int]]):
    """Batch sampler that yields P identities x K images per step (paper: P=8, K=4).

    Use it as ``DataLoader(dataset, batch_sampler=sampler)``; each item it yields is a list
    of ``P * K / world_size`` dataset indices, identity by identity (the K images of the
    first identity, then the K of the second, ...).

    Two definitions of an epoch are offered, because public ReID code disagrees by a factor
    of about four and the paper's 600 epochs mean very different amounts of training under
    each:

    - ``epoch="identities"`` (default; MGN-pytorch's ``RandomSampler``, whose multi-branch
      design the paper builds on, §2.3; the paper does not say whose code it used): one pass
      over the training identities. They are shuffled and cut into ``floor(num_ids / P)``
      batches of K images each; the ``num_ids mod P`` left over are dropped for that epoch (a
      different random set each epoch). Market-1501: floor(751 / 8) = 93 steps; MGN-pytorch
      runs 94, its last batch partial.
    - ``epoch="images"`` (torchreid's ``RandomIdentitySampler`` and fast-reid): one pass over
      the images, ``floor(num_images / (P * K))`` steps (Market-1501: 12,936 / 32 -> 404).
      Each identity's shuffled images are cut into chunks of K (a remainder smaller than K is
      dropped for that round); all chunks are shuffled together and each batch takes, from the
      front of that queue, the first chunks of P distinct identities (chunks of an identity
      already in the batch wait for the next batch), so identities appear in proportion to
      their image count. When the queue runs short a new round of chunks is appended, so the
      epoch has its exact length (torchreid picks P identities uniformly among those with
      chunks left until fewer than P remain, so its ``__len__`` only estimates the epoch).

    Ours (both kinds): an identity with fewer than K images contributes each of its images
    once and fills the remaining slots by drawing its images with replacement (torchreid
    draws all K with replacement, so an identity with 2 images can get one image 4 times).

    Resume: call :meth:`set_epoch` before each epoch, or :meth:`set_position` to start
    mid-epoch; the global RNGs are never touched.

    Distributed (DDP): every rank computes the same global batch of P identities x K, and
    rank ``r`` takes identities ``r * P / world_size`` to ``(r + 1) * P / world_size - 1`` of
    it, so the union over ranks is exactly the single-process batch. P must be divisible by
    ``world_size``; ``len(sampler)`` is the same on every rank.

    Args:
        pids: The training identity of each dataset record, one per record, in dataset
            order (length N, any integers; a record's index is its position here).
        p: Identities per global batch (paper: 8). Default 8.
        k: Images per identity (paper: 4). Default 4.
        epoch: ``"identities"`` (default) or ``"images"``, as described above.
        seed: Non-negative seed of the batch sequence. Default 0.
        rank: This process's rank in ``[0, world_size)``. Default 0.
        world_size: Number of processes sharing each global batch. Default 1.

    Raises:
        ConfigError: For a bad P, K, epoch kind, seed, rank or world size, fewer than two
            identities, P larger than the number of identities, or an epoch of zero steps.
    """

    def __init__(
        self,
        pids: Sequence[int] | np.ndarray,
        p: int = 8,
        k: int = 4,
        *,
        epoch: str = "identities",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        pid_array = _as_pid_array(pids)
        _check_positive_int("p", p)
        _check_positive_int("k", k)
        _check_positive_int("world_size", world_size)
        if epoch not in EPOCH_KINDS:
            raise ConfigError(f"epoch must be one of {list(EPOCH_KINDS)}, got {epoch!r}.")
        if not _is_int(seed) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
        if not _is_int(rank) or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be an integer in [0, {world_size}), got {rank!r}.")
        if p % world_size != 0:
            raise ConfigError(
                f"p must be divisible by world_size so each rank gets the same number of "
                f"identities (got p={p}, world_size={world_size})."
            )
        # Sorted unique ids: the identity order must not depend on record order.
        unique_pids, inverse = np.unique(pid_array, return_inverse=True)
        num_ids = len(unique_pids)
        if num_ids < 2:
            raise ConfigError(
                f"P x K sampling needs at least 2 training identities, got {num_ids}."
            )
        if p > num_ids:
            raise ConfigError(
                f"p must not exceed the number of training identities (got p={p}, "
                f"{num_ids} identities)."
            )
        self.p, self.k, self.epoch_kind = p, k, epoch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_ids, self.num_images = num_ids, len(pid_array)
        # Record indices of each identity, ascending (np.flatnonzero keeps order).
        self._indices = [np.flatnonzero(inverse == i) for i in range(num_ids)]
        if epoch == "identities":
            self._steps = num_ids // p
        else:
            self._steps = self.num_images // (p * k)
        if self._steps == 0:
            raise ConfigError(
                f"epoch='images' gives 0 steps: {self.num_images} images < p * k = {p * k}; "
                f"use epoch='identities' or a smaller p or k."
            )
        self._epoch = 0
        self._start_step = 0

    def __len__(self) -> int:
        """Steps per epoch (identical on every rank)."""
        return self._steps

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields, from its first step.

        Args:
            epoch: Non-negative epoch number.
        """
        self.set_position(epoch, 0)

    def set_position(self, epoch: int, step: int) -> None:
        """Resume: the next iteration yields the batches of ``epoch`` from ``step`` on.

        Args:
            epoch: Non-negative epoch number.
            step: Number of batches of that epoch already consumed, in ``[0, len(self)]``.
        """
        _check_epoch(epoch)
        if not _is_int(step) or not 0 <= step <= self._steps:
            raise ConfigError(f"step must be an integer in [0, {self._steps}], got {step!r}.")
        self._epoch, self._start_step = int(epoch), int(step)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self._epoch)[self._start_step :]

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's share of every batch of ``epoch``.

        Args:
            epoch: Non-negative epoch number.

        Returns:
            ``len(self)`` lists of ``P * K / world_size`` dataset indices.
        """
        share = self.p // self.world_size * self.k
        start = self.rank * share
        return [batch[start : start + share] for batch in self.global_batches(epoch)]

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every full P x K batch of ``epoch``, as all ranks compute it.

        Args:
            epoch: Non-negative epoch number.

        Returns:
            ``len(self)`` lists of ``P * K`` dataset indices, K consecutive per identity.
        """
        _check_epoch(epoch)
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self.epoch_kind == "identities":
            id_batches = self._identity_epoch(rng)
        else:
            id_batches = self._image_epoch(rng)
        return [[int(i) for chunk in batch for i in chunk] for batch in id_batches]

    def _identity_epoch(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """Each identity once (leftovers dropped): ``steps`` lists of P chunks of K indices."""
        order = rng.permutation(self.num_ids)[: self._steps * self.p]
        return [
            [self._draw_k(int(i), rng) for i in order[s * self.p : (s + 1) * self.p]]
            for s in range(self._steps)
        ]

    def _image_epoch(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        """About one pass over the images: ``steps`` lists of P chunks of distinct ids."""
        queue: deque[tuple[int, np.ndarray]] = deque()
        batches = []
        for _ in range(self._steps):
            picked: list[np.ndarray] = []
            waiting: list[tuple[int, np.ndarray]] = []
            seen: set[int] = set()
            while len(picked) < self.p:
                if not queue:
                    # A round holds every identity, so P distinct ones are always found.
                    queue.extend(self._chunk_round(rng))
                ident, chunk = queue.popleft()
                if ident in seen:
                    waiting.append((ident, chunk))
                else:
                    seen.add(ident)
                    picked.append(chunk)
            queue.extendleft(reversed(waiting))
            batches.append(picked)
        return batches

    def _chunk_round(self, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
        """Every identity's images, shuffled, cut into chunks of K; all chunks shuffled."""
        chunks = []
        for ident, indices in enumerate(self._indices):
            if len(indices) < self.k:
                chunks.append((ident, self._draw_k(ident, rng)))
                continue
            shuffled = rng.permutation(indices)
            for c in range(len(indices) // self.k):
                chunks.append((ident, shuffled[c * self.k : (c + 1) * self.k]))
        return [chunks[i] for i in rng.permutation(len(chunks))]

    def _draw_k(self, ident: int, rng: np.random.Generator) -> np.ndarray:
        """K distinct images of an identity, or all of them plus draws with replacement."""
        indices = self._indices[ident]
        if len(indices) >= self.k:
            return rng.choice(indices, size=self.k, replace=False)
        extra = rng.choice(indices, size=self.k - len(indices), replace=True)
        return rng.permutation(np.concatenate([indices, extra]))


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive_int(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


def _check_epoch(epoch: object) -> None:
    if not _is_int(epoch) or epoch < 0:
        raise ConfigError(f"epoch must be a non-negative integer, got {epoch!r}.")


def _as_pid_array(pids: Sequence[int] | np.ndarray) -> np.ndarray:
    """The pids as a 1-D integer array, or a ConfigError saying what was wrong."""
    array = np.asarray(pids)
    if array.ndim != 1 or array.size == 0:
        raise ConfigError(
            f"pids must be a non-empty 1-D sequence of integers (one per record), "
            f"got shape {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"pids must be integers, got dtype {array.dtype}.")
    return array
