"""Builders of tiny dataset trees with the real naming rules, for the dataset tests.

Market-style, MSMT17 and folder images are empty files (the parsers never decode them);
the fake CUHK03 MATLAB files hold real pixel arrays because extraction writes real PNGs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path

import h5py
import numpy as np
from scipy.io import savemat


def touch(path: Path) -> Path:
    """Create an empty file (and its parent folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_market_tree(
    root: Path,
    *,
    train: Iterable[str],
    query: Iterable[str],
    gallery: Iterable[str],
    subdir: str | None = "Market-1501-v15.09.15",
) -> Path:
    """Write empty files into ``root[/subdir]/{bounding_box_train,query,bounding_box_test}``."""
    base = root / subdir if subdir else root
    for folder, names in (
        ("bounding_box_train", train),
        ("query", query),
        ("bounding_box_test", gallery),
    ):
        (base / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            touch(base / folder / name)
    return base


def cuhk03_test_image(offset: int, height: int = 6, width: int = 4) -> np.ndarray:
    """An (H, W, 3) uint8 image whose every pixel differs, so any flip or transpose shows."""
    return ((np.arange(height * width * 3).reshape(height, width, 3) + offset) % 256).astype(
        np.uint8
    )


def write_fake_cuhk03_mat(
    path: Path,
    subsets: Mapping[str, list[list[dict[int, np.ndarray]]]],
    *,
    storage: str = "matlab",
) -> None:
    """Write a MATLAB-v7.3-like HDF5 file laid out as ``cuhk-03.mat``.

    Args:
        path: Output file.
        subsets: ``{"labeled": pairs, "detected": pairs}``; ``pairs[p][i]`` maps the columns
            (0..9) of person ``i`` of pair ``p`` to an (H, W, 3) image; missing columns become
            empty cells, alternating MATLAB's 2-element empty marker and a zero-size dataset.
        storage: ``"matlab"`` stores each image as MATLAB does through HDF5, ``(3, W, H)``;
            ``"whc"`` stores it as ``(W, H, 3)``.
    """
    counter = itertools.count()
    with h5py.File(path, "w") as mat:
        refs = mat.create_group("#refs#")

        def put(data: np.ndarray) -> h5py.Reference:
            name = f"r{next(counter)}"
            refs.create_dataset(name, data=data)
            return refs[name].ref

        for subset, pairs in subsets.items():
            pair_refs = []
            for persons in pairs:
                grid = np.empty((len(persons), 10), dtype=h5py.ref_dtype)
                for i, columns in enumerate(persons):
                    for column in range(10):
                        if column in columns:
                            image = columns[column]
                            data = image.T if storage == "matlab" else image.transpose(1, 0, 2)
                        elif (i + column) % 2:
                            data = np.zeros(2, dtype=np.uint64)  # MATLAB's marker of an empty cell
                        else:
                            data = np.zeros(0, dtype=np.uint8)
                        grid[i, column] = put(data)
                # MATLAB's (n x 10) cell array reads through HDF5 as (10, n).
                pair_refs.append(put(grid.T))
            mat.create_dataset(subset, data=np.array([pair_refs], dtype=h5py.ref_dtype))


def write_split_file(
    path: Path,
    filelist: list[str],
    labels: list[int],
    *,
    train_idx: list[int],
    query_idx: list[int],
    gallery_idx: list[int],
    drop: tuple[str, ...] = (),
) -> None:
    """Write a ``cuhk03_new_protocol_config_*.mat`` file (indices given 1-based, as MATLAB)."""
    cells = np.empty((len(filelist), 1), dtype=object)
    for i, name in enumerate(filelist):
        cells[i, 0] = name
    views = [int(name.split("_")[2]) for name in filelist]
    content = {
        "filelist": cells,
        "labels": np.asarray(labels, dtype=float).reshape(-1, 1),
        "camId": np.asarray(views, dtype=float).reshape(-1, 1),
        "train_idx": np.asarray(train_idx, dtype=float).reshape(-1, 1),
        "query_idx": np.asarray(query_idx, dtype=float).reshape(-1, 1),
        "gallery_idx": np.asarray(gallery_idx, dtype=float).reshape(-1, 1),
    }
    savemat(str(path), {k: v for k, v in content.items() if k not in drop})


def make_msmt17_tree(root: Path, version: str, lists: Mapping[str, list[str]]) -> Path:
    """Write ``root/<version>/list_<key>.txt`` files and empty image folders.

    V1 folders are ``train/`` and ``test/``, V2 ones ``mask_train_v2/`` and ``mask_test_v2/``.
    """
    base = root / version
    train_dir, test_dir = (
        ("train", "test") if version == "MSMT17_V1" else ("mask_train_v2", "mask_test_v2")
    )
    (base / train_dir).mkdir(parents=True)
    (base / test_dir).mkdir(parents=True)
    for key, lines in lists.items():
        (base / f"list_{key}.txt").write_text("".join(line + "\n" for line in lines))
    return base
