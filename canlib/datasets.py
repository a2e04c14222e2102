"""Person re-identification datasets parsed into ``(path, pid, camid)`` records.

``build_dataset(name, root, **options)`` turns a dataset folder into a :class:`ReIDDataset`
with ``train``, ``query`` and ``gallery`` lists of :class:`ImageRecord`. Parsing decodes no
image (Market-1501 parses in milliseconds); :func:`check_images` scans for unreadable files
up front. The exception is CUHK03, whose images are extracted once from a MATLAB file.

Conventions (shared with ``canlib.evaluate``): camera ids are 0-based (``camid = C - 1`` for a
name holding ``cC``); train pids are relabelled ``0..N-1`` in the order of the sorted original
ids, query and gallery keep theirs so that evaluation can match them; junk (pid ``-1``) is
dropped from training and kept in query/gallery for the evaluation protocol to skip.

Counts of the known datasets are checked against their published release after loading; a
mismatch (a partial copy, another release) is reported with :class:`DatasetWarning`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError
from canlib.rules import JUNK_PID  # junk images: dropped from train, kept in query/gallery

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
"""File extensions treated as images (compared case-insensitively); other files are ignored."""

MARKET_DISTRACTOR_PID = 0
"""Pid of Market-1501's distractor images (``0000_c...``): ordinary negatives in the gallery."""

SPLITS: tuple[str, ...] = ("train", "query", "gallery")


class DatasetWarning(UserWarning):
    """A dataset loaded, but looks unlike its published release or its protocol will misbehave."""


class ImageRecord(NamedTuple):
    """One image: where it is, whose it is, which camera took it.

    Attributes:
        path: Absolute path of the image file.
        pid: Person id: relabelled ``0..N-1`` in ``train``; original id in query/gallery
            (``-1`` junk, ``0`` Market-1501 distractor).
        camid: 0-based camera id.
    """

    path: str
    pid: int
    camid: int


@dataclass(frozen=True)
class ReIDDataset:
    """A parsed re-ID dataset: three splits of :class:`ImageRecord` plus what is known about it.

    Frozen so that fields cannot be rebound; the record lists themselves are plain lists and
    should be treated as read-only.

    Attributes:
        name: Dataset name as given to :func:`build_dataset` (e.g. ``"market1501"``).
        root: Folder the dataset was read from.
        train: Training records, pids relabelled ``0..N-1``, junk dropped.
        query: Query records with original pids.
        gallery: Gallery records with original pids (junk and distractors kept).
        info: Loader-specific facts (layout version, subset, original train ids, ...).
        junk_pids: Pids that mark junk images in this dataset.
        distractor_pids: Pids that mark distractor images in this dataset.
    """

    name: str
    root: str
    train: list[ImageRecord] = field(repr=False)
    query: list[ImageRecord] = field(repr=False)
    gallery: list[ImageRecord] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    junk_pids: tuple[int, ...] = ()
    distractor_pids: tuple[int, ...] = ()

    @property
    def num_train_pids(self) -> int:
        """Number of training identities (classifier size)."""
        return len({r.pid for r in self.train})

    @property
    def num_train_cams(self) -> int:
        """Number of distinct cameras in the training split."""
        return len({r.camid for r in self.train})

    def split(self, name: str) -> list[ImageRecord]:
        """Return the records of split ``name`` (``train``, ``query`` or ``gallery``)."""
        if name not in SPLITS:
            raise ConfigError(f"Unknown split {name!r}; expected one of {', '.join(SPLITS)}.")
        return getattr(self, name)

    def summary(self) -> list[dict[str, Any]]:
        """Per-split statistics, one dict per split.

        Returns:
            Rows with keys ``split``, ``ids`` (distinct pids; in query and gallery junk and
            distractors excluded), ``images`` (all records, junk and distractors included),
            ``cameras``, ``junk`` and ``distractors`` (image counts).
            ``pandas.DataFrame(ds.summary())`` gives a table.
        """
        rows = []
        for split in SPLITS:
            records = getattr(self, split)
            # Train pids are relabelled (0 is a class there), so the special pids only mean
            # junk and distractors in query and gallery.
            junk_pids = () if split == "train" else self.junk_pids
            distractor_pids = () if split == "train" else self.distractor_pids
            pids = [r.pid for r in records]
            rows.append(
                {
                    "split": split,
                    "ids": len(set(pids) - set(junk_pids) - set(distractor_pids)),
                    "images": len(records),
                    "cameras": len({r.camid for r in records}),
                    "junk": sum(pid in junk_pids for pid in pids),
                    "distractors": sum(pid in distractor_pids for pid in pids),
                }
            )
        return rows

    def __str__(self) -> str:
        header = ("split", "ids", "images", "cameras", "junk", "distractors")
        lines = [f"=> {self.name} ({self.root})", "  " + " | ".join(f"{h:>11}" for h in header)]
        lines.append("  " + "-" * (len(lines[1]) - 2))
        for row in self.summary():
            lines.append("  " + " | ".join(f"{row[h]:>11}" for h in header))
        return "\n".join(lines)


# --- Small shared helpers -------------------------------------------------------------


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has one of :data:`IMG_EXTENSIONS` (case-insensitive); no file access."""
    return Path(path).suffix.lower() in IMG_EXTENSIONS


def relabel(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], list[int]]:
    """Relabel pids to ``0..N-1`` following the order of the sorted unique original pids.

    Args:
        records: Records with original pids.

    Returns:
        The relabelled records (same order) and the original pid of each new label
        (``original[label] == old pid``).
    """
    records = list(records)
    original = sorted({r.pid for r in records})
    new_label = {pid: label for label, pid in enumerate(original)}
    return [r._replace(pid=new_label[r.pid]) for r in records], original


def _relabelled(
    name: str,
    root: Path,
    splits: dict[str, list[ImageRecord]],
    info: dict[str, Any],
    *,
    junk_pids: tuple[int, ...] = (),
    distractor_pids: tuple[int, ...] = (),
) -> ReIDDataset:
    """The dataset of parsed splits: train relabelled without its junk, whose original pids
    are added to ``info`` as ``train_original_pids``."""
    # Junk is not an identity: torchreid and fast-reid drop it from training too.
    train, original = relabel(r for r in splits["train"] if r.pid not in junk_pids)
    return ReIDDataset(
        name=name,
        root=str(root),
        train=train,
        query=splits["query"],
        gallery=splits["gallery"],
        info={**info, "train_original_pids": original},
        junk_pids=junk_pids,
        distractor_pids=distractor_pids,
    )


def _require_dir(path: Path, what: str, expected: str) -> None:
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"{what} not found: {path} is not an existing folder; expected {expected}."
        )


def _require_nonempty(records: Sequence[ImageRecord], source: Path, expected: str) -> None:
    if not records:
        raise DatasetError(f"{source} holds no images; expected {expected}.")


def _sorted_files(folder: Path) -> list[Path]:
    # Sorted so that record order never depends on the filesystem; scandir's cached file type
    # spares one stat call per image on 20k-file folders. Never recursive, so a link back up
    # the tree (``loop -> ..``) is just a folder entry and cannot make listing loop.
    return [Path(e.path) for e in _visible_entries(folder) if _is_file_entry(e)]


def _visible_entries(folder: Path) -> list[os.DirEntry]:
    """A folder's entries sorted by name, hidden ones (``.name``) left out, as ``glob`` does
    (torchreid and fast-reid list images with it): a tree copied through a Mac holds an
    AppleDouble ``._0002_c1s1_000451_03.jpg`` beside each image, which is not an image, and
    Jupyter adds ``.ipynb_checkpoints`` folders."""
    with os.scandir(folder) as listing:
        return sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)


def _is_file_entry(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a file, following links; folders and links to them are not.

    An image-named link that leads to no file (dangling, or a loop of links, where ``is_file``
    raises ELOOP) is refused: skipping it would silently drop an image from the counts.
    """
    try:
        if entry.is_file():
            return True
        if entry.is_dir() or not entry.is_symlink():
            return False
        reason = "its target does not exist"
    except OSError as error:
        reason = f"it cannot be followed: {error.strerror}"
    if is_image_file(entry.name):
        raise DatasetError(
            f"Image {entry.path} is a symbolic link that leads to no file ({reason}); "
            "expected an image file or a link to one."
        )
    return False


def _check_camera(cam: int, max_cam: int | None, path: str | Path, dataset: str) -> None:
    if cam < 1 or (max_cam is not None and cam > max_cam):
        allowed = f"1..{max_cam}" if max_cam is not None else "1 or more"
        raise DatasetError(f"Image {path} names camera {cam}, outside {allowed} for {dataset}.")


# --- Market-1501 style (Market-1501, DukeMTMC-reID, the synthetic set) ----------------

# Paper-independent, from the datasets' own naming: pid (``-1`` junk or digits), ``_c`` + camera
# number, then Market's optional ``sS`` sequence and any ``_...`` tail (frame, box index).
# Stricter than torchreid's ``([-\d]+)_c(\d)`` so that ``--1_c1`` or ``0002_c12`` cannot parse
# to a wrong pid or camera.
_MARKET_NAME = re.compile(r"(?P<pid>-1|\d+)_c(?P<cam>\d+)(?:s\d+)?(?:_.*)?", re.ASCII | re.DOTALL)
_MARKET_EXAMPLE = "PPPP_cC[sS]_..., e.g. 0002_c1s1_000451_03.jpg or 0005_c2_f0046985.jpg"

_MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def parse_market_name(
    path: str | Path, *, max_cam: int | None = None, dataset: str = "market1501"
) -> ImageRecord:
    """Parse one Market-1501-style file name into a record.

    Args:
        path: Image path; only its name is read (``0002_c1s1_000451_03.jpg``).
        max_cam: Highest valid camera number (1-based), None for no limit.
        dataset: Dataset name used in error messages.

    Returns:
        ``ImageRecord(str(path), pid, camid)`` with ``camid = C - 1``.

    Raises:
        DatasetError: The name does not follow the pattern or names an invalid camera.
    """
    match = _MARKET_NAME.fullmatch(Path(path).stem)
    if match is None:
        raise DatasetError(
            f"Image {path} does not follow the {dataset} naming pattern {_MARKET_EXAMPLE}."
        )
    cam = int(match["cam"])
    _check_camera(cam, max_cam, path, dataset)
    return ImageRecord(str(path), int(match["pid"]), cam - 1)


def _parse_market_dir(folder: Path, *, max_cam: int | None, dataset: str) -> list[ImageRecord]:
    """Parse every image of one split folder; non-image files (Thumbs.db, readme) are skipped."""
    records = [
        parse_market_name(p, max_cam=max_cam, dataset=dataset)
        for p in _sorted_files(folder)
        if is_image_file(p)
    ]
    _require_nonempty(records, folder, f"{dataset} images named {_MARKET_EXAMPLE}")
    return records


def _find_market_style_root(root: Path, subdir: str, dataset: str) -> Path:
    """Return ``root/subdir`` if it exists, else ``root``; check that the split folders exist."""
    expected = ", ".join(f"{f}/" for f in _MARKET_FOLDERS.values())
    _require_dir(
        root, f"{dataset} root", f"a folder holding {expected} (directly or under {subdir}/)"
    )
    base = root / subdir if (root / subdir).is_dir() else root
    for folder in _MARKET_FOLDERS.values():
        _require_dir(base / folder, f"{dataset} split folder", f"{expected} under {base}")
    return base


def _market_style_dataset(
    name: str,
    base: Path,
    *,
    max_cam: int | None,
    distractor_pids: tuple[int, ...],
    info: dict[str, Any],
) -> ReIDDataset:
    splits = {
        split: _parse_market_dir(base / folder, max_cam=max_cam, dataset=name)
        for split, folder in _MARKET_FOLDERS.items()
    }
    dataset = _relabelled(
        name, base, splits, info, junk_pids=(JUNK_PID,), distractor_pids=distractor_pids
    )
    _require_nonempty(
        dataset.train, base / _MARKET_FOLDERS["train"], f"{name} training images with pid >= 0"
    )
    return dataset


def load_market1501(root: Path) -> ReIDDataset:
    """Market-1501.

    Reference: Zheng et al. Scalable Person Re-identification: A Benchmark. ICCV 2015.
    URL: https://zheng-lab.cecs.anu.edu.au/Project/project_reid.html

    Layout: ``root/Market-1501-v15.09.15/`` (or ``root`` itself) with ``bounding_box_train/``,
    ``bounding_box_test/`` and ``query/``; names like ``0002_c1s1_000451_03.jpg``, cameras 1-6.

    Dataset statistics: train 751 ids / 12,936 images; query 750 ids / 3,368 images; gallery
    19,732 files = 3,819 junk (pid -1) + 2,793 distractors (pid 0) + 13,116 of the 750 test ids.
    torchreid and fast-reid drop junk at load time (gallery 15,913); ours keeps it and leaves it
    to evaluation, which gives identical metrics.

    Args:
        root: Dataset folder.
    """
    base = _find_market_style_root(root, "Market-1501-v15.09.15", "market1501")
    return _market_style_dataset(
        "market1501",
        base,
        max_cam=6,
        distractor_pids=(MARKET_DISTRACTOR_PID,),
        info={"layout": "market1501"},
    )


def load_dukemtmcreid(root: Path) -> ReIDDataset:
    """DukeMTMC-reID.

    Reference: Zheng et al. Unlabeled Samples Generated by GAN Improve the Person
    Re-identification Baseline in vitro. ICCV 2017 (images from Ristani et al., ECCVW 2016).

    Layout: ``root/DukeMTMC-reID/`` (or ``root`` itself) with the three Market-1501 folders;
    names like ``0005_c2_f0046985.jpg``, cameras 1-8.

    Dataset statistics: train 702 ids / 16,522 images; query 702 ids / 2,228 images; gallery
    17,661 images (the 702 test ids plus 408 distractor ids, which have ordinary pids).

    Args:
        root: Dataset folder.
    """
    base = _find_market_style_root(root, "DukeMTMC-reID", "dukemtmcreid")
    return _market_style_dataset(
        "dukemtmcreid", base, max_cam=8, distractor_pids=(), info={"layout": "market1501"}
    )


# --- CUHK03 (MATLAB v7.3 images + new-protocol split files) ---------------------------

CUHK03_SUBSETS: tuple[str, ...] = ("labeled", "detected", "both")
_CUHK03_MAT = "cuhk-03.mat"
_CUHK03_SPLIT_KEYS = ("filelist", "labels", "train_idx", "query_idx", "gallery_idx")
_CUHK03_NAME = re.compile(r"(?P<pair>\d+)_(?P<pid>\d+)_(?P<view>\d+)_(?P<index>\d+)\.png", re.ASCII)


def cuhk03_image_name(pair: int, pid: int, view: int, index: int) -> str:
    """File name of an extracted CUHK03 image, as torchreid and the new-protocol file lists use.

    Args:
        pair: 1-based camera pair (1..5).
        pid: 1-based person index within the pair.
        view: 1 (first camera of the pair) or 2.
        index: 1-based column of the image in the person's row (1..10; 6..10 are view 2).
    """
    return f"{pair}_{pid:03d}_{view}_{index:02d}.png"


def hdf5_image_to_hwc(array: np.ndarray) -> np.ndarray | None:
    """Turn an image read from the MATLAB v7.3 file into an ``(H, W, 3)`` uint8 array.

    MATLAB is column-major, so an ``H x W x 3`` image reads through h5py as ``(3, W, H)``;
    the full transpose restores it. ``(W, H, 3)`` (only the spatial axes swapped) is accepted
    too. Empty cells (zero-size, or MATLAB's 2-element empty marker) give None.

    Args:
        array: Array from ``h5py``, shape ``(3, W, H)`` or ``(W, H, 3)``.

    Returns:
        ``(H, W, 3)`` uint8 array, or None for an empty cell.
    """
    if array.size == 0 or array.ndim != 3:
        return None
    if array.shape[0] == 3:
        image = array.T
    elif array.shape[2] == 3:
        image = array.transpose(1, 0, 2)
    else:
        raise DatasetError(
            f"CUHK03 image of shape {array.shape} is neither (3, W, H) nor (W, H, 3)."
        )
    return np.ascontiguousarray(image, dtype=np.uint8)


def _cell_grid(refs: np.ndarray) -> np.ndarray:
    """Orient a camera pair's reference array as ``(persons, 10)``.

    MATLAB's ``n x 10`` cell reads through h5py as ``(10, n)``; accept ``(n, 10)`` as well.
    """
    if refs.ndim != 2:
        raise DatasetError(f"CUHK03 camera pair of shape {refs.shape} is not a 2-D cell array.")
    return refs.T if refs.shape[0] == 10 else refs


def _save_png_atomic(image: np.ndarray, path: Path) -> None:
    # Write then rename, so an interrupted extraction never leaves a truncated PNG that the
    # cache check would take for a finished one.
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


def extract_cuhk03_images(mat_path: Path, subset: str, out_dir: Path) -> int:
    """Extract one subset of ``cuhk-03.mat`` to PNG files, skipping files already present.

    Args:
        mat_path: The original ``cuhk-03.mat`` (MATLAB v7.3 / HDF5).
        subset: ``"labeled"`` or ``"detected"``.
        out_dir: Destination folder (created if missing).

    Returns:
        Number of PNG files written.

    Raises:
        DatasetError: The file is not HDF5, lacks the subset, or holds a malformed image.
    """
    import h5py  # optional: only CUHK03's MATLAB file needs it

    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        mat = h5py.File(mat_path, "r")
    except OSError as exc:
        raise DatasetError(
            f"{mat_path} is not a MATLAB v7.3 (HDF5) file as CUHK03 ships it: {exc}."
        ) from exc
    with mat:
        if subset not in mat:
            raise DatasetError(
                f"{mat_path} has no '{subset}' entry; expected 'labeled' and 'detected'."
            )
        pair_refs = mat[subset][0]
        for pair, pair_ref in enumerate(
            tqdm(pair_refs, desc=f"CUHK03 {subset} pairs", leave=False), start=1
        ):
            cells = _cell_grid(mat[pair_ref][()])
            for row, column in np.ndindex(cells.shape):
                view = 1 if column < 5 else 2
                path = out_dir / cuhk03_image_name(pair, row + 1, view, column + 1)
                if path.is_file():
                    continue
                image = hdf5_image_to_hwc(mat[cells[row, column]][()])
                if image is not None:
                    _save_png_atomic(image, path)
                    written += 1
    logger.info("Extracted %d CUHK03 %s images from %s to %s", written, subset, mat_path, out_dir)
    return written


def _mat_strings(cells: np.ndarray) -> list[str]:
    """Strings of a MATLAB cell array as loaded by scipy (each cell an array holding a str)."""
    return [str(np.asarray(cell).ravel()[0]) for cell in np.asarray(cells, dtype=object).ravel()]


def _read_new_protocol(path: Path) -> dict[str, Any]:
    """Read a ``cuhk03_new_protocol_config_*.mat`` file; indices made 0-based and checked."""
    from scipy.io import loadmat  # only CUHK03's split files need it (a slow import)

    try:
        mat = loadmat(str(path))
    except (ValueError, OSError, NotImplementedError) as exc:
        raise DatasetError(f"{path} is not a readable MATLAB split file: {exc}.") from exc
    missing = [key for key in _CUHK03_SPLIT_KEYS if key not in mat]
    if missing:
        raise DatasetError(
            f"{path} lacks {', '.join(missing)}; expected {', '.join(_CUHK03_SPLIT_KEYS)}."
        )
    split: dict[str, Any] = {
        "filelist": _mat_strings(mat["filelist"]),
        "labels": np.asarray(mat["labels"]).ravel().astype(int),
    }
    for key in ("train_idx", "query_idx", "gallery_idx"):
        idx = np.asarray(mat[key]).ravel().astype(int) - 1  # the files are 1-based (MATLAB)
        if idx.size and (idx.min() < 0 or idx.max() >= len(split["filelist"])):
            raise DatasetError(
                f"{path}: {key} holds indices outside 1..{len(split['filelist'])} (the length of "
                "filelist)."
            )
        split[key] = idx
    if len(split["labels"]) != len(split["filelist"]):
        raise DatasetError(
            f"{path}: labels has {len(split['labels'])} entries but filelist "
            f"{len(split['filelist'])}."
        )
    return split


def _cuhk03_records(split: dict[str, Any], key: str, img_dir: Path) -> list[ImageRecord]:
    records = []
    for i in split[key]:
        name = split["filelist"][i]
        match = _CUHK03_NAME.fullmatch(name)
        if match is None:
            raise DatasetError(
                f"CUHK03 file name {name!r} does not follow "
                f"{{pair}}_{{pid:03d}}_{{view}}_{{index:02d}}.png."
            )
        view = int(match["view"])
        _check_camera(view, 2, img_dir / name, "cuhk03 (views)")
        # Camera = view within the pair, as torchreid does: a person belongs to one pair, so
        # the view alone tells whether two images of the same person share a camera.
        records.append(ImageRecord(str(img_dir / name), int(split["labels"][i]), view - 1))
    return records


def _find_cuhk03_files(root: Path, subsets: Sequence[str]) -> tuple[Path, dict[str, Path]]:
    _require_dir(
        root, "cuhk03 root", f"a folder holding {_CUHK03_MAT} and cuhk03_new_protocol_config_*.mat"
    )
    candidates = [root / _CUHK03_MAT, root / "cuhk03_release" / _CUHK03_MAT]
    mat_path = next((p for p in candidates if p.is_file()), None)
    if mat_path is None:
        raise DatasetNotFoundError(
            f"CUHK03 images file not found: expected {candidates[0]} or {candidates[1]}."
        )
    split_paths = {}
    for subset in subsets:
        name = f"cuhk03_new_protocol_config_{subset}.mat"
        options = [root / name, mat_path.parent / name]
        found = next((p for p in options if p.is_file()), None)
        if found is None:
            raise DatasetNotFoundError(
                f"CUHK03 split file not found: expected {options[0]} (Zhong et al. 2017)."
            )
        split_paths[subset] = found
    return mat_path, split_paths


def load_cuhk03(root: Path, *, subset: str = "both") -> ReIDDataset:
    """CUHK03 under the new protocol (767 training / 700 test identities).

    Reference: Li et al. DeepReID: Deep Filter Pairing Neural Network for Person
    Re-identification. CVPR 2014. New protocol: Zhong et al. Re-ranking Person
    Re-identification with k-reciprocal Encoding. CVPR 2017.

    Layout: ``root/cuhk-03.mat`` (or ``root/cuhk03_release/cuhk-03.mat``) and
    ``root/cuhk03_new_protocol_config_{labeled,detected}.mat``. Images are extracted once to
    ``images_labeled/`` and ``images_detected/`` beside ``cuhk-03.mat``; later calls reuse
    them without opening the MATLAB file.

    Dataset statistics: labeled 767 ids / 7,368 train, 1,400 query, 5,328 gallery; detected
    767 ids / 7,365 train, 1,400 query, 5,332 gallery.

    Args:
        root: Dataset folder.
        subset: ``"both"`` (default, the paper's setting, §4.7: "all testing images are used
            without splitting into labeled and detected groups"), ``"labeled"`` (hand-drawn
            boxes) or ``"detected"`` (DPM boxes). ``"both"`` is our reading of the paper's
            sentence: both subsets' new-protocol splits pooled. Pids are the split files'
            labels, shared by the two subsets (the same person), so training sees both boxes
            of each person under one relabelled id; query and gallery are the concatenations.
            Camera ids are the view within the pair (0 or 1), as in torchreid.
    """
    if subset not in CUHK03_SUBSETS:
        raise ConfigError(
            f"Unknown cuhk03 subset {subset!r}; expected one of {', '.join(CUHK03_SUBSETS)}."
        )
    parts = ["labeled", "detected"] if subset == "both" else [subset]
    mat_path, split_paths = _find_cuhk03_files(root, parts)
    splits: dict[str, list[ImageRecord]] = {"train": [], "query": [], "gallery": []}
    for part in parts:
        protocol = _read_new_protocol(split_paths[part])
        img_dir = mat_path.parent / f"images_{part}"
        # Cache: the MATLAB file is opened only if some listed image is missing.
        if not all((img_dir / name).is_file() for name in protocol["filelist"]):
            extract_cuhk03_images(mat_path, part, img_dir)
        missing = [name for name in protocol["filelist"] if not (img_dir / name).is_file()]
        if missing:
            raise DatasetError(
                f"{mat_path} holds no image for {len(missing)} file(s) listed in "
                f"{split_paths[part]}, "
                f"e.g. {img_dir / missing[0]}."
            )
        for split in splits:
            splits[split] += _cuhk03_records(protocol, f"{split}_idx", img_dir)
    for split, records in splits.items():
        _require_nonempty(records, split_paths[parts[0]], f"a non-empty {split}_idx")
    return _relabelled("cuhk03", root, splits, {"subset": subset, "protocol": "new (767/700)"})


# --- MSMT17 (list files) --------------------------------------------------------------

_MSMT_VERSIONS = ("MSMT17_V1", "MSMT17_V2")
_MSMT_TRAIN_DIRS = ("train", "mask_train_v2")
_MSMT_TEST_DIRS = ("test", "mask_test_v2")
_DIGITS = re.compile(r"\d+", re.ASCII)
_MSMT_LINE = "'0000/0000_000_01_0303morning_0008_0.jpg 0'"


def parse_msmt17_list(list_path: Path, img_dir: Path, *, max_cam: int = 15) -> list[ImageRecord]:
    """Parse an MSMT17 list file (``<relative path> <pid>`` per line).

    Args:
        list_path: ``list_train.txt`` etc.
        img_dir: Folder the relative paths start from.
        max_cam: Highest valid camera number (1-based); default 15.

    Returns:
        Records in file order; camera = ``int(name.split('_')[2]) - 1``.

    Raises:
        DatasetError: A line does not look like ``<path> <pid>``, or names an invalid camera,
            or the file is not text.
    """
    try:
        # utf-8-sig: a list saved by a Windows editor starts with a byte-order mark, which
        # would otherwise become part of the first path.
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{list_path} is not a UTF-8 text file ({error.reason} at byte {error.start}); "
            f"expected lines like {_MSMT_LINE}."
        ) from error
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        fields = PurePosixPath(parts[0]).name.split("_") if parts else []
        if (
            len(parts) != 2
            or not _DIGITS.fullmatch(parts[1])
            or len(fields) < 3
            or not _DIGITS.fullmatch(fields[2])
        ):
            raise DatasetError(
                f"{list_path} line {lineno} ({line.strip()!r}) does not look like {_MSMT_LINE}."
            )
        cam = int(fields[2])
        _check_camera(cam, max_cam, f"{parts[0]} ({list_path} line {lineno})", "msmt17")
        records.append(ImageRecord(str(img_dir / parts[0]), int(parts[1]), cam - 1))
    _require_nonempty(records, list_path, f"lines like {_MSMT_LINE}")
    return records


def _find_msmt17_base(root: Path) -> Path:
    _require_dir(
        root, "msmt17 root", f"a folder holding {' or '.join(_MSMT_VERSIONS)} (or their content)"
    )
    return next((root / v for v in _MSMT_VERSIONS if (root / v).is_dir()), root)


def _first_dir(base: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (base / name).is_dir():
            return base / name
    raise DatasetNotFoundError(
        f"msmt17 {what} folder not found under {base}: expected {' or '.join(names)}/."
    )


def load_msmt17(root: Path, *, combine_val: bool = True) -> ReIDDataset:
    """MSMT17 (V1, or V2 with blurred faces).

    Reference: Wei et al. Person Transfer GAN to Bridge Domain Gap for Person
    Re-identification. CVPR 2018.

    Layout: ``root/MSMT17_V1/`` or ``root/MSMT17_V2/`` (or ``root`` itself) with
    ``list_{train,val,query,gallery}.txt`` and image folders ``train/``, ``test/`` (V1) or
    ``mask_train_v2/``, ``mask_test_v2/`` (V2). If both versions are present, V1 is used.

    Dataset statistics: train 1,041 ids / 32,621 images (train + val lists), query 11,659,
    gallery 82,161, 15 cameras.

    Args:
        root: Dataset folder.
        combine_val: Append ``list_val.txt`` to training (default True: the published 32,621
            training images count both lists; torchreid's current default leaves val out).
    """
    base = _find_msmt17_base(root)
    train_dir = _first_dir(base, _MSMT_TRAIN_DIRS, "training image")
    test_dir = _first_dir(base, _MSMT_TEST_DIRS, "test image")
    wanted = ["train", "val", "query", "gallery"] if combine_val else ["train", "query", "gallery"]
    splits: dict[str, list[ImageRecord]] = {"train": [], "query": [], "gallery": []}
    for key in wanted:
        path = base / f"list_{key}.txt"
        if not path.is_file():
            raise DatasetNotFoundError(f"msmt17 list file not found: expected {path}.")
        split = "train" if key == "val" else key
        splits[split] += parse_msmt17_list(path, train_dir if split == "train" else test_dir)
    return _relabelled("msmt17", base, splits, {"version": base.name, "combine_val": combine_val})


# --- Plain folder layout (users' own data) --------------------------------------------

_FOLDER_PID = re.compile(r"-1|\d+", re.ASCII)
_FOLDER_IMAGE = re.compile(r"(?P<cam>\d+)_.*", re.ASCII | re.DOTALL)
_FOLDER_EXAMPLE = "<split>/<pid>/<camid>_<anything>.jpg, e.g. train/0007/0_frame12.jpg"


def _parse_folder_split(folder: Path) -> list[ImageRecord]:
    records = []
    for entry in _visible_entries(folder):
        if _is_file_entry(entry):
            if is_image_file(entry.name):
                raise DatasetError(
                    f"Image {entry.path} lies outside a pid folder; expected {_FOLDER_EXAMPLE}."
                )
            continue
        # Anything else must be a pid folder; a link loop such as ``loop -> ..`` is refused
        # here by its name, and only one level below is listed, so nothing can recurse.
        if not _FOLDER_PID.fullmatch(entry.name):
            raise DatasetError(
                f"Folder {entry.path} is not an integer pid (or -1 for junk); expected "
                f"{_FOLDER_EXAMPLE}."
            )
        for path in _sorted_files(Path(entry.path)):
            if not is_image_file(path):
                continue
            match = _FOLDER_IMAGE.fullmatch(path.stem)
            if match is None:
                raise DatasetError(
                    f"Image {path} does not start with an integer camera id; expected "
                    f"{_FOLDER_EXAMPLE}."
                )
            records.append(ImageRecord(str(path), int(entry.name), int(match["cam"])))
    _require_nonempty(records, folder, _FOLDER_EXAMPLE)
    return records


def load_folder(root: Path) -> ReIDDataset:
    """A plain folder tree for users' own data: ``root/{train,query,gallery}/<pid>/<camid>_*.jpg``.

    Pid folders are integers (``-1`` marks junk, dropped from training). The camera id is the
    integer before the first ``_`` of the file name, 0-based as written (``0_a.jpg`` is camera
    0). With a single camera, the standard protocol removes every same-camera match and no query
    can be evaluated: a :class:`DatasetWarning` says so, and evaluation must then be run without
    the same-camera filter.

    Args:
        root: Dataset folder.
    """
    expected = f"{', '.join(f'{s}/' for s in SPLITS)} laid out as {_FOLDER_EXAMPLE}"
    _require_dir(root, "folder dataset root", expected)
    splits = {}
    for split in SPLITS:
        _require_dir(root / split, "folder dataset split", expected)
        splits[split] = _parse_folder_split(root / split)
    dataset = _relabelled("folder", root, splits, {"layout": "folder"}, junk_pids=(JUNK_PID,))
    _require_nonempty(dataset.train, root / "train", "training images with pid >= 0")
    test_cams = {r.camid for r in splits["query"] + splits["gallery"]}
    if len(test_cams) == 1:
        warnings.warn(
            f"All query and gallery images under {root} come from camera {test_cams.pop()}: the "
            "standard protocol removes same-camera matches, so evaluate without that filter.",
            DatasetWarning,
            stacklevel=3,
        )
    return dataset


# --- The built-in synthetic dataset ---------------------------------------------------


def load_synthetic(root: Path | None, *, size: str = "default", seed: int = 0) -> ReIDDataset:
    """The built-in synthetic dataset (Market-1501 layout), generated on first use.

    Args:
        root: Where it lives or is generated; None for ``canlib.synthetic``'s default place.
        size: Size preset understood by ``canlib.synthetic.ensure_synthetic``; default "default".
        seed: Generation seed; default 0.
    """
    # Imported here, on purpose: a missing or broken synthetic module must not break the
    # real loaders (tests/test_datasets.py checks it, and its fake synthetic module too).
    from canlib.synthetic import ensure_synthetic, read_synthetic_info

    base = Path(ensure_synthetic(root, size=size, seed=seed))
    base = _find_market_style_root(base, "Market-1501-v15.09.15", "synthetic")
    info = {"size": size, "seed": seed, **dict(read_synthetic_info(base))}
    return _market_style_dataset(
        "synthetic", base, max_cam=None, distractor_pids=(MARKET_DISTRACTOR_PID,), info=info
    )


# --- Scanning images once (the one place besides CUHK03 extraction that decodes) ------

_BAD_LISTED = 5
"""How many bad files an error or warning of :func:`check_images` names before "and N more"."""

Record = TypeVar("Record", bound=tuple)


def check_images(
    records: Sequence[Record], *, remove_bad: bool = False, progress: bool = True
) -> tuple[list[Record], list[tuple[str, str]]]:
    """Decode every image once and refuse, or drop, those that cannot be read.

    Parsing never opens an image, so a truncated JPEG, a zero-byte file or a text file named
    ``.jpg`` would otherwise only fail when a batch reaches it (mid-epoch, or at test time).
    This scan finds them all up front (ours; the paper and torchreid have no such check).
    Grayscale, CMYK, RGBA and palette images are not bad: they decode to RGB.

    Args:
        records: ``(path, pid, camid)`` records (e.g. ``dataset.train``); a path listed
            twice is decoded once.
        remove_bad: False (default) to raise on any bad image; True to drop them with one
            :class:`DatasetWarning` naming how many and which.
        progress: Show a tqdm bar (default True).

    Returns:
        The good records in their order, and ``(path, reason)`` of each bad image (empty
        unless ``remove_bad``).

    Raises:
        DatasetError: Some image cannot be decoded and ``remove_bad`` is False; the message
            gives the count and the first few paths with their reasons.
    """
    # Imported here, not at the top: canlib.data.transforms imports torch, and parsing a
    # dataset (and checking a config, which reads DATASET_NAMES) must not need it.
    from canlib.data.transforms import decode_image

    reasons: dict[str, str | None] = {}
    for record in tqdm(records, desc="checking images", leave=False, disable=not progress):
        path = str(record[0])
        if path in reasons:
            continue
        try:
            decode_image(path)
            reasons[path] = None
        except DatasetError as error:  # DatasetNotFoundError included
            reasons[path] = _decode_reason(error, path)
    bad = [(path, reason) for path, reason in reasons.items() if reason is not None]
    if not bad:
        return list(records), []
    counts = f"{len(bad)} of {len(reasons)} images"
    if not remove_bad:
        raise DatasetError(
            f"{counts} cannot be decoded: {list_bad(bad)}; fix or delete them, or pass "
            "remove_bad=True to skip them."
        )
    warnings.warn(
        f"Skipped {counts} that cannot be decoded: {list_bad(bad)}.", DatasetWarning, stacklevel=2
    )
    return [r for r in records if reasons[str(r[0])] is None], bad


def list_bad(bad: Sequence[tuple[str, str]]) -> str:
    """``(path, reason)`` pairs for a message: the first five, then how many more."""
    listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:_BAD_LISTED])
    return listed + (f" and {len(bad) - _BAD_LISTED} more" if len(bad) > _BAD_LISTED else "")


def _decode_reason(error: DatasetError, path: str) -> str:
    """A short reason: the decoder's or the OS's own words, without repeating the path."""
    cause = error.__cause__
    if isinstance(cause, UnidentifiedImageError):
        empty = os.path.isfile(path) and os.path.getsize(path) == 0
        return "empty file" if empty else "not an image PIL can identify"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(cause) if cause is not None else str(error)


# --- Published statistics and dispatch ------------------------------------------------


@dataclass(frozen=True)
class _Expected:
    train_ids: int
    train_images: int
    query_images: int
    gallery_images: int
    gallery_note: str = ""


_PUBLISHED: dict[str, _Expected] = {
    "market1501": _Expected(751, 12936, 3368, 19732, " (15,913 without its 3,819 junk images)"),
    "dukemtmcreid": _Expected(702, 16522, 2228, 17661),
    "cuhk03/labeled": _Expected(767, 7368, 1400, 5328),
    "cuhk03/detected": _Expected(767, 7365, 1400, 5332),
    "cuhk03/both": _Expected(767, 7368 + 7365, 2800, 5328 + 5332),
    "msmt17": _Expected(1041, 32621, 11659, 82161),
}


def _published_key(dataset: ReIDDataset) -> str | None:
    if dataset.name == "cuhk03":
        return f"cuhk03/{dataset.info['subset']}"
    if dataset.name == "msmt17" and not dataset.info["combine_val"]:
        return None  # the published train count includes the val list
    return dataset.name if dataset.name in _PUBLISHED else None


def check_published_counts(dataset: ReIDDataset) -> list[str]:
    """Compare a known dataset's counts with its published release; warn on any difference.

    Args:
        dataset: A loaded dataset; names without published statistics are not checked.

    Returns:
        One line per mismatch (empty when all agree or nothing is known).
    """
    key = _published_key(dataset)
    if key is None:
        return []
    expected = _PUBLISHED[key]
    found = {
        "train ids": (dataset.num_train_pids, expected.train_ids, ""),
        "train images": (len(dataset.train), expected.train_images, ""),
        "query images": (len(dataset.query), expected.query_images, ""),
        "gallery images": (len(dataset.gallery), expected.gallery_images, expected.gallery_note),
    }
    mismatches = [
        f"{what}: found {got:,}, published {want:,}{note}"
        for what, (got, want, note) in found.items()
        if got != want
    ]
    if mismatches:
        warnings.warn(
            f"{key} at {dataset.root} differs from the published release "
            f"({'; '.join(mismatches)}); "
            "a partial or different copy?",
            DatasetWarning,
            stacklevel=3,
        )
    return mismatches


_LOADERS: dict[str, Callable[..., ReIDDataset]] = {
    "market1501": load_market1501,
    "dukemtmcreid": load_dukemtmcreid,
    "cuhk03": load_cuhk03,
    "msmt17": load_msmt17,
    "synthetic": load_synthetic,
    "folder": load_folder,
}

DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)
"""Names accepted by :func:`build_dataset`."""


def build_dataset(name: str, root: str | Path | None = None, **options: Any) -> ReIDDataset:
    """Parse a dataset folder into train/query/gallery records.

    Args:
        name: One of :data:`DATASET_NAMES`.
        root: Dataset folder (see each loader for the layouts it accepts); may be None only
            for ``synthetic``.
        **options: Loader options: ``cuhk03``: ``subset``; ``msmt17``: ``combine_val``;
            ``synthetic``: ``size``, ``seed``. Others take none.

    Returns:
        The dataset; its summary is logged, and a known dataset whose counts differ from the
        published ones raises a :class:`DatasetWarning`.

    Raises:
        ConfigError: Unknown name or option, or missing root.
        DatasetNotFoundError: Root, split folder or annotation file missing.
        DatasetError: A malformed file name or list line, an empty split, a bad camera id.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise ConfigError(
            f"Unknown dataset name {name!r}; known names: {', '.join(DATASET_NAMES)}."
        )
    params = inspect.signature(loader).parameters.values()
    accepted = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"Unknown option {unknown[0]!r} for dataset {name!r}; accepted options: "
            f"{', '.join(accepted) or 'none'}."
        )
    if root is None and name != "synthetic":
        raise ConfigError(f"Dataset {name!r} needs a root folder; got root=None.")
    path = None if root is None else Path(root).expanduser().absolute()
    dataset = loader(path, **options)
    logger.info("%s", dataset)
    check_published_counts(dataset)
    return dataset
