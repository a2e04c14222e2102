"""Atomic, safe checkpoints.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(..., weights_only=True)``: a file from the internet can never execute
code on load. Writes go to a temporary file in the same folder that is flushed, synced
and then renamed over the target, so a crash or a full disk mid-write leaves the previous
checkpoint untouched. Several epochs are kept (``keep``), and :func:`load_latest` falls
back to the newest one that loads when the newest is cut short.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from canlib.errors import CheckpointError

log = logging.getLogger(__name__)


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` so that ``path`` is either the old or the new file, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        # torch's zip writer reports a failed write (disk full) as an opaque RuntimeError
        # whose __context__ is the real OSError: name the file and the OS's reason.
        cause = exc if isinstance(exc, OSError) else exc.__context__
        reason = (
            cause.strerror if isinstance(cause, OSError) and cause.strerror else _first_line(exc)
        )
        raise CheckpointError(
            f"could not write checkpoint {path} ({reason}); the previous checkpoint is intact"
        ) from exc
    finally:  # a failed or interrupted write leaves no temporary file (a finished one has none)
        Path(tmp).unlink(missing_ok=True)


def save_checkpoint(state: dict[str, Any], run_dir: Path, epoch: int, keep: int = 2) -> Path:
    """Save the state after ``epoch`` epochs and delete all but the newest ``keep`` files."""
    path = Path(run_dir) / f"checkpoint-e{epoch:05d}.pt"
    save_atomic(state, path)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run folder, oldest first."""
    return sorted(Path(run_dir).glob("checkpoint-e[0-9][0-9][0-9][0-9][0-9].pt"))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint or weights file without unpickling arbitrary objects.

    Raises:
        CheckpointError: the file is missing, cut short, or holds anything but plain data
            (a pickle that would run code is refused, and its payload never runs).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data and was refused "
            "(loading uses weights_only=True so untrusted files cannot run code): "
            f"{_first_line(exc)}"
        ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        KeyError,
        IndexError,
        ValueError,
        struct.error,
    ) as exc:
        # Arbitrary bytes make the unpickler fail in many ways (UnicodeDecodeError is a
        # ValueError); all of them mean "not a checkpoint", so resume can fall back.
        raise CheckpointError(
            f"checkpoint {path} is unreadable or cut short: "
            f"{_first_line(exc) or type(exc).__name__}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state


def load_latest(run_dir: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict]:
    """The newest checkpoint of ``run_dir`` that loads; broken newer files are skipped."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise CheckpointError(f"no checkpoint-eNNNNN.pt file in {run_dir} to resume from")
    for path in reversed(candidates):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            log.warning("skipping unusable checkpoint: %s", exc)
    raise CheckpointError(f"every checkpoint in {run_dir} is unreadable; cannot resume")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
