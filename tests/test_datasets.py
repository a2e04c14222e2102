"""Tests of canlib.datasets on tiny trees built with the real naming rules.

Expected records are worked out by hand from the file names in each fixture (see comments).
"""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from fixtures_datasets import (
    cuhk03_test_image,
    make_market_tree,
    make_msmt17_tree,
    touch,
    write_fake_cuhk03_mat,
    write_split_file,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from canlib.datasets import (
    DATASET_NAMES,
    IMG_EXTENSIONS,
    DatasetWarning,
    ImageRecord,
    ReIDDataset,
    build_dataset,
    hdf5_image_to_hwc,
    parse_market_name,
    relabel,
)
from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError


def build_quietly(name: str, root, **options) -> ReIDDataset:
    """build_dataset with the expected 'differs from the published release' warning silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*differs from the published release", category=DatasetWarning
        )
        return build_dataset(name, root, **options)


def as_tuples(records, base: Path) -> list[tuple[str, int, int]]:
    """Records as (path relative to base, pid, camid) for compact comparisons."""
    return [(str(Path(r.path).relative_to(base)), r.pid, r.camid) for r in records]


# --------------------------------------------------------------------------------------
# Market-1501 and DukeMTMC-reID
# --------------------------------------------------------------------------------------

MARKET_TRAIN = [
    "0002_c1s1_000451_03.jpg",
    "0002_c3s1_000551_01.jpg",
    "0010_c6s4_002452_02.jpg",
    "0007_c2s3_070952_01.jpg",
    "-1_c1s1_000001_00.jpg",  # junk in training: must be dropped
    "Thumbs.db",  # stray non-image files: ignored
]
MARKET_QUERY = ["0003_c1s1_000101_00.jpg", "0004_c2s1_000201_00.jpg"]
MARKET_GALLERY = [
    "0004_c1s1_000301_01.jpg",
    "0003_c2s1_000401_02.jpg",
    "0000_c3s1_000501_00.jpg",  # distractor
    "-1_c1s1_000601_00.jpg",  # junk
    "readme.txt",
]


@pytest.fixture
def market_root(tmp_path: Path) -> Path:
    make_market_tree(tmp_path, train=MARKET_TRAIN, query=MARKET_QUERY, gallery=MARKET_GALLERY)
    return tmp_path


def test_market1501_records_relabelling_junk_and_distractors(market_root: Path) -> None:
    ds = build_quietly("market1501", market_root)
    base = market_root / "Market-1501-v15.09.15"
    assert ds.root == str(base)
    # Sorted names: -1_... (junk, dropped), 0002_c1, 0002_c3, 0007_c2, 0010_c6.
    # Original pids 2, 7, 10 -> 0, 1, 2 in sorted order; camid = C - 1.
    assert as_tuples(ds.train, base) == [
        ("bounding_box_train/0002_c1s1_000451_03.jpg", 0, 0),
        ("bounding_box_train/0002_c3s1_000551_01.jpg", 0, 2),
        ("bounding_box_train/0007_c2s3_070952_01.jpg", 1, 1),
        ("bounding_box_train/0010_c6s4_002452_02.jpg", 2, 5),
    ]
    assert ds.info["train_original_pids"] == [2, 7, 10]
    assert as_tuples(ds.query, base) == [
        ("query/0003_c1s1_000101_00.jpg", 3, 0),
        ("query/0004_c2s1_000201_00.jpg", 4, 1),
    ]
    # Gallery keeps junk (-1) and distractors (0) with their pids, original ids elsewhere.
    assert as_tuples(ds.gallery, base) == [
        ("bounding_box_test/-1_c1s1_000601_00.jpg", -1, 0),
        ("bounding_box_test/0000_c3s1_000501_00.jpg", 0, 2),
        ("bounding_box_test/0003_c2s1_000401_02.jpg", 3, 1),
        ("bounding_box_test/0004_c1s1_000301_01.jpg", 4, 0),
    ]
    assert all(isinstance(r, ImageRecord) and Path(r.path).is_absolute() for r in ds.train)
    assert ds.num_train_pids == 3
    assert ds.num_train_cams == 4  # cameras 1, 2, 3, 6


def test_market1501_summary_counts(market_root: Path) -> None:
    ds = build_quietly("market1501", market_root)
    assert ds.summary() == [
        {"split": "train", "ids": 3, "images": 4, "cameras": 4, "junk": 0, "distractors": 0},
        {"split": "query", "ids": 2, "images": 2, "cameras": 2, "junk": 0, "distractors": 0},
        # ids exclude junk and distractors; images count every file.
        {"split": "gallery", "ids": 2, "images": 4, "cameras": 3, "junk": 1, "distractors": 1},
    ]
    text = str(ds)
    assert "market1501" in text and "gallery" in text and "distractors" in text


def test_market1501_warns_on_published_count_mismatch(market_root: Path) -> None:
    with pytest.warns(DatasetWarning) as record:
        build_dataset("market1501", market_root)
    message = str(record[0].message)
    assert "train ids: found 3, published 751" in message
    assert "train images: found 4, published 12,936" in message
    assert "query images: found 2, published 3,368" in message
    assert (
        "gallery images: found 4, published 19,732 (15,913 without its 3,819 junk images)"
        in message
    )


def test_market1501_root_itself_and_uppercase_extension(tmp_path: Path) -> None:
    make_market_tree(
        tmp_path,
        train=["0001_c1s1_000001_00.JPG"],
        query=["0002_c1s1_0_0.png"],
        gallery=["0002_c2s1_0_0.jpeg"],
        subdir=None,
    )
    ds = build_quietly("market1501", tmp_path)
    assert ds.root == str(tmp_path)
    assert [(r.pid, r.camid) for r in ds.train + ds.query + ds.gallery] == [(0, 0), (2, 0), (2, 1)]


def test_hidden_files_of_a_mac_or_jupyter_are_not_images(tmp_path: Path) -> None:
    """A tree copied through a Mac holds an AppleDouble ``._<name>`` beside each image and a
    ``.DS_Store``; glob, which torchreid and fast-reid list images with, skips them, and so do
    we. The records are those of the tree without them."""
    make_market_tree(
        tmp_path,
        train=["0002_c1s1_000451_03.jpg", "._0002_c1s1_000451_03.jpg", ".DS_Store"],
        query=["0003_c1s1_000101_00.jpg", "._0003_c1s1_000101_00.jpg"],
        gallery=["0003_c2s1_000401_02.jpg", ".hidden/0003_c3s1_000401_02.jpg"],
    )
    ds = build_quietly("market1501", tmp_path)
    base = tmp_path / "Market-1501-v15.09.15"
    assert as_tuples(ds.train, base) == [("bounding_box_train/0002_c1s1_000451_03.jpg", 0, 0)]
    assert as_tuples(ds.query, base) == [("query/0003_c1s1_000101_00.jpg", 3, 0)]
    assert as_tuples(ds.gallery, base) == [("bounding_box_test/0003_c2s1_000401_02.jpg", 3, 1)]


def test_dukemtmcreid_names_and_cameras(tmp_path: Path) -> None:
    base = make_market_tree(
        tmp_path,
        train=["0005_c2_f0046985.jpg", "0001_c8_f0000001.jpg"],
        query=["0011_c1_f0000100.jpg"],
        gallery=["0011_c5_f0000200.jpg", "0012_c8_f0000300.jpg"],
        subdir="DukeMTMC-reID",
    )
    ds = build_quietly("dukemtmcreid", tmp_path)
    # Sorted: 0001_c8 then 0005_c2; pids 1 -> 0, 5 -> 1.
    assert as_tuples(ds.train, base) == [
        ("bounding_box_train/0001_c8_f0000001.jpg", 0, 7),
        ("bounding_box_train/0005_c2_f0046985.jpg", 1, 1),
    ]
    assert as_tuples(ds.gallery, base) == [
        ("bounding_box_test/0011_c5_f0000200.jpg", 11, 4),
        ("bounding_box_test/0012_c8_f0000300.jpg", 12, 7),
    ]


def test_dukemtmcreid_camera_nine_is_out_of_range(tmp_path: Path) -> None:
    base = make_market_tree(
        tmp_path,
        train=["0005_c9_f0046985.jpg"],
        query=["0011_c1_f1.jpg"],
        gallery=["0011_c2_f2.jpg"],
        subdir="DukeMTMC-reID",
    )
    bad = base / "bounding_box_train" / "0005_c9_f0046985.jpg"
    with pytest.raises(DatasetError, match="camera 9, outside 1..8") as err:
        build_dataset("dukemtmcreid", tmp_path)
    assert str(bad) in str(err.value)


# --------------------------------------------------------------------------------------
# Errors of the Market-style loaders and of build_dataset
# --------------------------------------------------------------------------------------


def test_missing_root_names_path_and_expected_folders(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset("market1501", missing)
    message = str(err.value)
    assert str(missing) in message
    assert (
        "bounding_box_train/" in message and "query/" in message and "bounding_box_test/" in message
    )
    assert isinstance(err.value, FileNotFoundError)


def test_missing_split_folder_is_named(tmp_path: Path) -> None:
    base = make_market_tree(
        tmp_path, train=["0001_c1s1_0_0.jpg"], query=["0002_c1s1_0_0.jpg"], gallery=[]
    )
    (base / "bounding_box_test").rmdir()
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset("market1501", tmp_path)
    assert str(base / "bounding_box_test") in str(err.value)


def test_wrongly_named_image_is_named(market_root: Path) -> None:
    bad = touch(market_root / "Market-1501-v15.09.15" / "query" / "person3_cam1.jpg")
    with pytest.raises(DatasetError) as err:
        build_dataset("market1501", market_root)
    assert str(bad) in str(err.value)
    assert "0002_c1s1_000451_03.jpg" in str(err.value)  # shows the expected pattern


def test_empty_split_is_named(tmp_path: Path) -> None:
    base = make_market_tree(
        tmp_path, train=["0001_c1s1_0_0.jpg"], query=["notes.txt"], gallery=["0001_c2s1_0_0.jpg"]
    )
    with pytest.raises(DatasetError, match="holds no images") as err:
        build_dataset("market1501", tmp_path)
    assert str(base / "query") in str(err.value)


def test_training_split_of_only_junk_is_empty(tmp_path: Path) -> None:
    base = make_market_tree(
        tmp_path,
        train=["-1_c1s1_0_0.jpg"],
        query=["0001_c1s1_0_0.jpg"],
        gallery=["0001_c2s1_0_0.jpg"],
    )
    with pytest.raises(DatasetError) as err:
        build_dataset("market1501", tmp_path)
    assert str(base / "bounding_box_train") in str(err.value)


def test_market_camera_seven_is_out_of_range(market_root: Path) -> None:
    bad = touch(market_root / "Market-1501-v15.09.15" / "query" / "0003_c7s1_000101_00.jpg")
    with pytest.raises(DatasetError, match="camera 7, outside 1..6") as err:
        build_dataset("market1501", market_root)
    assert str(bad) in str(err.value)


def test_unknown_dataset_name_lists_known_names() -> None:
    with pytest.raises(ConfigError) as err:
        build_dataset("market", "/tmp")
    for name in DATASET_NAMES:
        assert name in str(err.value)


def test_unknown_option_names_option_and_accepted_ones(market_root: Path) -> None:
    with pytest.raises(ConfigError, match="'subsett'.*'cuhk03'.*subset"):
        build_dataset("cuhk03", market_root, subsett="labeled")
    with pytest.raises(ConfigError, match="'combine_val'.*'market1501'.*none"):
        build_dataset("market1501", market_root, combine_val=True)


def test_root_is_required_except_for_synthetic() -> None:
    with pytest.raises(ConfigError, match="root"):
        build_dataset("market1501", None)


def test_exports() -> None:
    assert set(DATASET_NAMES) == {
        "market1501",
        "dukemtmcreid",
        "cuhk03",
        "msmt17",
        "synthetic",
        "folder",
    }
    assert ".jpg" in IMG_EXTENSIONS and ".png" in IMG_EXTENSIONS and ".txt" not in IMG_EXTENSIONS


def test_relabel_follows_sorted_original_ids() -> None:
    records = [
        ImageRecord("a", 30, 0),
        ImageRecord("b", 4, 1),
        ImageRecord("c", 30, 2),
        ImageRecord("d", 17, 0),
    ]
    relabelled, original = relabel(records)
    assert original == [4, 17, 30]
    assert [r.pid for r in relabelled] == [2, 0, 2, 1]
    assert [r.path for r in relabelled] == ["a", "b", "c", "d"]


# Property: a Market-style name built from parts parses to those parts exactly when every part
# is valid, and raises DatasetError otherwise. The oracle below decides validity part by part.
_TAILS = {
    "s1_000451_03": True,
    "_f0046985": True,
    "": True,
    "s3_070952_01": True,
    "_": True,
    "x1": False,
    "s": False,
}


@given(
    pid=st.one_of(
        st.sampled_from(["-1", "0000", "0002", "1501"]),
        st.text(alphabet="-0123456789a", max_size=5),
    ),
    cam=st.text(alphabet="0123456789x", max_size=2),
    tail=st.sampled_from(sorted(_TAILS)),
    ext=st.sampled_from([".jpg", ".png", ".JPG"]),
)
def test_market_names_parse_or_raise(pid: str, cam: str, tail: str, ext: str) -> None:
    name = f"{pid}_c{cam}{tail}{ext}"
    pid_ok = pid == "-1" or (pid != "" and all(ch in "0123456789" for ch in pid))
    cam_ok = cam != "" and all(ch in "0123456789" for ch in cam) and 1 <= int(cam) <= 6
    if pid_ok and cam_ok and _TAILS[tail]:
        assert parse_market_name(f"/d/{name}", max_cam=6) == (f"/d/{name}", int(pid), int(cam) - 1)
    else:
        with pytest.raises(DatasetError, match="/d/"):
            parse_market_name(f"/d/{name}", max_cam=6)


# --------------------------------------------------------------------------------------
# CUHK03
# --------------------------------------------------------------------------------------

# Fake cuhk-03.mat: pair 1 holds persons 1 and 2, pair 2 holds person 1. Columns 0-4 are view 1,
# 5-9 view 2. Per-subset offsets make every image distinct.
_CUHK03_COLUMNS = {
    "labeled": [[(0, 1, 5), (0, 5, 6)], [(0, 5)]],
    "detected": [[(0, 1, 5), (0, 5)], [(0, 5)]],
}
# File names those columns give, {pair}_{pid:03d}_{view}_{column+1:02d}.png:
_CUHK03_FILES = {
    "labeled": [
        "1_001_1_01.png",
        "1_001_1_02.png",
        "1_001_2_06.png",
        "1_002_1_01.png",
        "1_002_2_06.png",
        "1_002_2_07.png",
        "2_001_1_01.png",
        "2_001_2_06.png",
    ],
    "detected": [
        "1_001_1_01.png",
        "1_001_1_02.png",
        "1_001_2_06.png",
        "1_002_1_01.png",
        "1_002_2_06.png",
        "2_001_1_01.png",
        "2_001_2_06.png",
    ],
}
# Global labels: pair1/person1 -> 5, pair1/person2 -> 2, pair2/person1 -> 9.
_CUHK03_LABEL = {"1_001": 5, "1_002": 2, "2_001": 9}


def _cuhk03_image(subset: str, pair: int, person: int, column: int) -> np.ndarray:
    offset = (subset == "detected") * 100 + pair * 30 + person * 10 + column
    return cuhk03_test_image(offset)


def make_cuhk03(root: Path, *, storage: str = "matlab", release_dir: bool = False) -> Path:
    mat_dir = root / "cuhk03_release" if release_dir else root
    mat_dir.mkdir(parents=True, exist_ok=True)
    subsets = {
        subset: [
            [
                {c: _cuhk03_image(subset, p + 1, i + 1, c) for c in columns}
                for i, columns in enumerate(persons)
            ]
            for p, persons in enumerate(pairs)
        ]
        for subset, pairs in _CUHK03_COLUMNS.items()
    }
    write_fake_cuhk03_mat(mat_dir / "cuhk-03.mat", subsets, storage=storage)
    for subset, files in _CUHK03_FILES.items():
        n_train = sum(name.startswith("1_") for name in files)
        write_split_file(
            root / f"cuhk03_new_protocol_config_{subset}.mat",
            files,
            [_CUHK03_LABEL[name[:5]] for name in files],
            train_idx=list(range(1, n_train + 1)),  # pair 1's persons train
            query_idx=[n_train + 1],  # 2_001_1_01
            gallery_idx=[n_train + 2],  # 2_001_2_06
        )
    return mat_dir


def test_cuhk03_labeled_records(tmp_path: Path) -> None:
    make_cuhk03(tmp_path)
    ds = build_quietly("cuhk03", tmp_path, subset="labeled")
    images = tmp_path / "images_labeled"
    # Train labels 5, 5, 5, 2, 2, 2 relabel to 1, 1, 1, 0, 0, 0; camid = view - 1.
    assert as_tuples(ds.train, images) == [
        ("1_001_1_01.png", 1, 0),
        ("1_001_1_02.png", 1, 0),
        ("1_001_2_06.png", 1, 1),
        ("1_002_1_01.png", 0, 0),
        ("1_002_2_06.png", 0, 1),
        ("1_002_2_07.png", 0, 1),
    ]
    assert as_tuples(ds.query, images) == [("2_001_1_01.png", 9, 0)]
    assert as_tuples(ds.gallery, images) == [("2_001_2_06.png", 9, 1)]
    assert ds.info["subset"] == "labeled"
    # Exactly the non-empty cells were extracted; no temporary files are left behind.
    assert sorted(p.name for p in images.iterdir()) == _CUHK03_FILES["labeled"]


@pytest.mark.parametrize("storage", ["matlab", "whc"])
def test_cuhk03_extracted_images_keep_orientation(tmp_path: Path, storage: str) -> None:
    make_cuhk03(tmp_path, storage=storage)
    build_quietly("cuhk03", tmp_path, subset="detected")
    png = tmp_path / "images_detected" / "1_002_2_06.png"
    with Image.open(png) as image:
        assert image.size == (4, 6)  # PIL reports (W, H): the 6 x 4 image stays upright
        decoded = np.asarray(image)
    np.testing.assert_array_equal(decoded, _cuhk03_image("detected", 1, 2, 5))


def test_hdf5_image_to_hwc_orientations() -> None:
    image = cuhk03_test_image(7, height=5, width=2)
    np.testing.assert_array_equal(hdf5_image_to_hwc(image.T), image)
    np.testing.assert_array_equal(hdf5_image_to_hwc(image.transpose(1, 0, 2)), image)
    assert hdf5_image_to_hwc(np.zeros(2, dtype=np.uint64)) is None
    assert hdf5_image_to_hwc(np.zeros((0, 0, 0), dtype=np.uint8)) is None


def test_cuhk03_reuses_extracted_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_cuhk03(tmp_path)
    first = build_quietly("cuhk03", tmp_path, subset="labeled")
    images = tmp_path / "images_labeled"
    mtimes = {p.name: p.stat().st_mtime_ns for p in images.iterdir()}

    def refuse(*args, **kwargs):
        raise AssertionError("cuhk-03.mat was opened although every image was cached")

    with monkeypatch.context() as patch:
        patch.setattr(h5py, "File", refuse)
        second = build_quietly("cuhk03", tmp_path, subset="labeled")
    assert second.train == first.train and second.gallery == first.gallery
    assert {p.name: p.stat().st_mtime_ns for p in images.iterdir()} == mtimes

    # A partial cache: only the missing image is written again.
    (images / "1_002_2_07.png").unlink()
    build_quietly("cuhk03", tmp_path, subset="labeled")
    after = {p.name: p.stat().st_mtime_ns for p in images.iterdir()}
    assert sorted(after) == sorted(mtimes)
    assert {k: v for k, v in after.items() if k != "1_002_2_07.png"} == {
        k: v for k, v in mtimes.items() if k != "1_002_2_07.png"
    }


def test_cuhk03_both_pools_labeled_and_detected(tmp_path: Path) -> None:
    make_cuhk03(tmp_path)
    ds = build_quietly("cuhk03", tmp_path, subset="both")
    # Union of both train splits: labels {2, 5} -> 0, 1 over 6 labeled + 5 detected images.
    assert len(ds.train) == 11
    assert sorted({r.pid for r in ds.train}) == [0, 1]
    assert [Path(r.path).parent.name for r in ds.train] == ["images_labeled"] * 6 + [
        "images_detected"
    ] * 5
    assert as_tuples(ds.query, tmp_path) == [
        ("images_labeled/2_001_1_01.png", 9, 0),
        ("images_detected/2_001_1_01.png", 9, 0),
    ]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(9, 1), (9, 1)]


def test_cuhk03_default_is_the_papers_pooled_test_set(tmp_path: Path) -> None:
    # Paper §4.7: "all testing images are used without splitting into labeled and detected
    # groups". The fixture has 6 labeled + 5 detected train images and one query per subset.
    make_cuhk03(tmp_path)
    ds = build_quietly("cuhk03", tmp_path)
    assert ds.info["subset"] == "both"
    assert len(ds.train) == 6 + 5 and len(ds.query) == 2 and len(ds.gallery) == 2


def test_cuhk03_mat_under_release_folder(tmp_path: Path) -> None:
    mat_dir = make_cuhk03(tmp_path, release_dir=True)
    ds = build_quietly("cuhk03", tmp_path, subset="detected")
    assert Path(ds.query[0].path) == mat_dir / "images_detected" / "2_001_1_01.png"


def test_cuhk03_warns_with_subset_statistics(tmp_path: Path) -> None:
    make_cuhk03(tmp_path)
    with pytest.warns(
        DatasetWarning, match="cuhk03/detected.*train images: found 5, published 7,365"
    ):
        build_dataset("cuhk03", tmp_path, subset="detected")


def test_cuhk03_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'pooled'.*labeled, detected, both"):
        build_dataset("cuhk03", tmp_path, subset="pooled")
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset("cuhk03", tmp_path)
    assert str(tmp_path / "cuhk-03.mat") in str(err.value)

    make_cuhk03(tmp_path)
    split = tmp_path / "cuhk03_new_protocol_config_detected.mat"
    split.unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset("cuhk03", tmp_path, subset="detected")
    assert str(split) in str(err.value)

    write_split_file(
        split,
        ["1_001_1_01.png"],
        [1],
        train_idx=[1],
        query_idx=[1],
        gallery_idx=[1],
        drop=("labels",),
    )
    with pytest.raises(DatasetError, match="lacks labels") as err:
        build_dataset("cuhk03", tmp_path, subset="detected")
    assert str(split) in str(err.value)

    write_split_file(split, ["1_001_1_01.png"], [1], train_idx=[1], query_idx=[2], gallery_idx=[1])
    with pytest.raises(DatasetError, match="query_idx.*outside 1..1"):
        build_dataset("cuhk03", tmp_path, subset="detected")


def test_cuhk03_listed_image_absent_from_mat(tmp_path: Path) -> None:
    make_cuhk03(tmp_path)
    split = tmp_path / "cuhk03_new_protocol_config_labeled.mat"
    write_split_file(
        split,
        ["1_001_1_01.png", "1_001_1_03.png"],
        [1, 1],
        train_idx=[1],
        query_idx=[2],
        gallery_idx=[1],
    )
    with pytest.raises(DatasetError) as err:
        build_dataset("cuhk03", tmp_path)
    assert str(tmp_path / "images_labeled" / "1_001_1_03.png") in str(err.value)


def test_cuhk03_mat_that_is_not_hdf5(tmp_path: Path) -> None:
    make_cuhk03(tmp_path)
    mat = tmp_path / "cuhk-03.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(DatasetError, match="v7.3") as err:
        build_dataset("cuhk03", tmp_path)
    assert str(mat) in str(err.value)


# --------------------------------------------------------------------------------------
# MSMT17
# --------------------------------------------------------------------------------------

MSMT_LISTS = {
    "train": [
        "0000/0000_000_01_0303morning_0008_0.jpg 0",
        "0000/0000_001_03_0303morning_0010_1.jpg 0",
        "0005/0005_000_15_0303noon_0001_0.jpg 5",
    ],
    "val": ["0002/0002_000_02_0303afternoon_0001_0.jpg 2"],
    "query": ["0000/0000_000_01_0303morning_0015_0.jpg 0"],
    "gallery": [
        "0000/0000_004_07_0303noon_0205_1.jpg 0",
        "",
        "0003/0003_000_12_0304morning_0001_0.jpg 3",
    ],
}


@pytest.mark.parametrize(
    ("version", "train_dir", "test_dir"),
    [("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2")],
)
def test_msmt17_lists(tmp_path: Path, version: str, train_dir: str, test_dir: str) -> None:
    base = make_msmt17_tree(tmp_path, version, MSMT_LISTS)
    ds = build_quietly("msmt17", tmp_path)
    assert ds.root == str(base) and ds.info["version"] == version
    # Train + val, in list order: original pids 0, 0, 5, 2 -> 0, 0, 2, 1;
    # camera fields 01, 03, 15, 02.
    assert as_tuples(ds.train, base) == [
        (f"{train_dir}/0000/0000_000_01_0303morning_0008_0.jpg", 0, 0),
        (f"{train_dir}/0000/0000_001_03_0303morning_0010_1.jpg", 0, 2),
        (f"{train_dir}/0005/0005_000_15_0303noon_0001_0.jpg", 2, 14),
        (f"{train_dir}/0002/0002_000_02_0303afternoon_0001_0.jpg", 1, 1),
    ]
    assert as_tuples(ds.query, base) == [
        (f"{test_dir}/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0)
    ]
    assert as_tuples(ds.gallery, base) == [
        (f"{test_dir}/0000/0000_004_07_0303noon_0205_1.jpg", 0, 6),
        (f"{test_dir}/0003/0003_000_12_0304morning_0001_0.jpg", 3, 11),
    ]


def test_msmt17_without_val(tmp_path: Path) -> None:
    make_msmt17_tree(tmp_path, "MSMT17_V1", MSMT_LISTS)
    with warnings.catch_warnings():
        # Published train counts include val: nothing to compare, so no warning may appear.
        warnings.simplefilter("error", DatasetWarning)
        ds = build_dataset("msmt17", tmp_path, combine_val=False)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 2), (1, 14)]


def test_msmt17_bad_line_names_file_and_line(tmp_path: Path) -> None:
    lists = {
        **MSMT_LISTS,
        "query": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/broken.jpg"],
    }
    base = make_msmt17_tree(tmp_path, "MSMT17_V1", lists)
    with pytest.raises(DatasetError, match="line 2") as err:
        build_dataset("msmt17", tmp_path)
    assert str(base / "list_query.txt") in str(err.value)


def test_msmt17_camera_sixteen_is_out_of_range(tmp_path: Path) -> None:
    lists = {**MSMT_LISTS, "val": ["0002/0002_000_16_0303afternoon_0001_0.jpg 2"]}
    base = make_msmt17_tree(tmp_path, "MSMT17_V2", lists)
    with pytest.raises(DatasetError, match="camera 16, outside 1..15") as err:
        build_dataset("msmt17", tmp_path)
    assert str(base / "list_val.txt") in str(err.value)


def test_msmt17_missing_pieces(tmp_path: Path) -> None:
    base = make_msmt17_tree(
        tmp_path, "MSMT17_V1", {k: v for k, v in MSMT_LISTS.items() if k != "gallery"}
    )
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset("msmt17", tmp_path)
    assert str(base / "list_gallery.txt") in str(err.value)
    (base / "test").rmdir()
    with pytest.raises(DatasetNotFoundError, match="test or mask_test_v2") as err:
        build_dataset("msmt17", tmp_path)
    assert str(base) in str(err.value)


def test_msmt17_lists_saved_on_windows_read_the_same(tmp_path: Path) -> None:
    """A list saved by a Windows editor: a UTF-8 byte-order mark and CRLF line ends. The
    records are those of the plain lists (the mark is not part of the first path)."""
    base = make_msmt17_tree(tmp_path / "plain", "MSMT17_V1", MSMT_LISTS)
    plain = build_quietly("msmt17", tmp_path / "plain")
    windows = make_msmt17_tree(tmp_path / "windows", "MSMT17_V1", MSMT_LISTS)
    for name in ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt"):
        text = (windows / name).read_text()
        (windows / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    ds = build_quietly("msmt17", tmp_path / "windows")
    for split in ("train", "query", "gallery"):
        assert as_tuples(getattr(ds, split), windows) == as_tuples(getattr(plain, split), base)
    assert as_tuples(ds.query, windows) == [("test/0000/0000_000_01_0303morning_0015_0.jpg", 0, 0)]


def test_msmt17_list_that_is_not_text_is_named(tmp_path: Path) -> None:
    base = make_msmt17_tree(tmp_path, "MSMT17_V1", MSMT_LISTS)
    (base / "list_query.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe binary")
    with pytest.raises(DatasetError, match="not a UTF-8 text file") as err:
        build_dataset("msmt17", tmp_path)
    assert str(base / "list_query.txt") in str(err.value)


def test_msmt17_empty_list(tmp_path: Path) -> None:
    base = make_msmt17_tree(tmp_path, "MSMT17_V1", {**MSMT_LISTS, "query": [""]})
    with pytest.raises(DatasetError, match="holds no images") as err:
        build_dataset("msmt17", tmp_path)
    assert str(base / "list_query.txt") in str(err.value)


# --------------------------------------------------------------------------------------
# Plain folder layout
# --------------------------------------------------------------------------------------


def make_folder_tree(root: Path, files: list[str]) -> None:
    for name in files:
        touch(root / name)


FOLDER_FILES = [
    "train/0007/0_a.jpg",
    "train/0007/1_b.jpg",
    "train/0003/0_c.png",
    "train/-1/0_x.jpg",  # junk: dropped from train
    "train/notes.txt",  # stray: ignored
    "train/0003/Thumbs.db",
    "query/0001/0_q.jpg",
    "gallery/0001/1_g.jpg",
    "gallery/0002/0_h.jpg",
]


def test_folder_layout(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, FOLDER_FILES)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # two cameras, nothing to warn about
        ds = build_dataset("folder", tmp_path)
    # Sorted folders -1 (dropped), 0003, 0007: pids 3 -> 0, 7 -> 1; camid as written.
    assert as_tuples(ds.train, tmp_path) == [
        ("train/0003/0_c.png", 0, 0),
        ("train/0007/0_a.jpg", 1, 0),
        ("train/0007/1_b.jpg", 1, 1),
    ]
    assert as_tuples(ds.query, tmp_path) == [("query/0001/0_q.jpg", 1, 0)]
    assert as_tuples(ds.gallery, tmp_path) == [
        ("gallery/0001/1_g.jpg", 1, 1),
        ("gallery/0002/0_h.jpg", 2, 0),
    ]


def test_folder_layout_skips_hidden_folders_and_files(tmp_path: Path) -> None:
    """Jupyter's ``.ipynb_checkpoints`` beside the pid folders, or inside one, and a Mac's
    ``._`` files are not data: the records are those of :data:`FOLDER_FILES` alone."""
    hidden = [
        "train/.ipynb_checkpoints/0_a-checkpoint.jpg",
        "train/0007/.ipynb_checkpoints/0_a-checkpoint.jpg",
        "train/0007/._0_a.jpg",
        "gallery/.DS_Store",
    ]
    make_folder_tree(tmp_path, FOLDER_FILES + hidden)
    ds = build_dataset("folder", tmp_path)
    make_folder_tree(tmp_path / "plain", FOLDER_FILES)
    plain = build_dataset("folder", tmp_path / "plain")
    for split in ("train", "query", "gallery"):
        got = as_tuples(getattr(ds, split), tmp_path)
        assert got == as_tuples(getattr(plain, split), tmp_path / "plain")
    assert as_tuples(ds.train, tmp_path)[1:] == [
        ("train/0007/0_a.jpg", 1, 0),
        ("train/0007/1_b.jpg", 1, 1),
    ]


def test_folder_single_camera_warns(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, ["train/1/0_a.jpg", "query/2/0_b.jpg", "gallery/2/0_c.jpg"])
    with pytest.warns(DatasetWarning, match="camera 0"):
        build_dataset("folder", tmp_path)


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("gallery/alice/0_a.jpg", "gallery/alice"),  # pid folder not an integer
        ("gallery/0002/cam0_a.jpg", "gallery/0002/cam0_a.jpg"),  # no integer camera prefix
        ("gallery/0_loose.jpg", "gallery/0_loose.jpg"),  # image outside a pid folder
    ],
)
def test_folder_errors_name_the_path(tmp_path: Path, bad: str, named: str) -> None:
    make_folder_tree(tmp_path, FOLDER_FILES + [bad])
    with pytest.raises(DatasetError) as err:
        build_dataset("folder", tmp_path)
    assert str(tmp_path / named) in str(err.value)


def test_folder_missing_split(tmp_path: Path) -> None:
    make_folder_tree(tmp_path, ["train/1/0_a.jpg", "query/2/0_b.jpg"])
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset("folder", tmp_path)
    assert str(tmp_path / "gallery") in str(err.value)


# --------------------------------------------------------------------------------------
# Synthetic (canlib.synthetic stubbed: its own tests cover generation)
# --------------------------------------------------------------------------------------


def test_synthetic_uses_ensure_synthetic_and_attaches_info(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def ensure_synthetic(root=None, *, size="default", seed=0):
        calls.append((root, size, seed))
        make_market_tree(
            tmp_path,
            train=["0001_c1s1_000001_00.jpg", "0004_c2s1_000001_00.jpg"],
            query=["0010_c1s1_000001_00.jpg"],
            gallery=["0010_c2s1_000001_00.jpg"],
            subdir=None,
        )
        return tmp_path

    def read_synthetic_info(root):
        assert Path(root) == tmp_path
        return {"seed": 3, "families": 2}

    fake = types.ModuleType("canlib.synthetic")
    fake.ensure_synthetic = ensure_synthetic
    fake.read_synthetic_info = read_synthetic_info
    monkeypatch.setitem(sys.modules, "canlib.synthetic", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # no published counts to compare with
        ds = build_dataset("synthetic", None, size="tiny", seed=3)
    assert calls == [(None, "tiny", 3)]
    assert ds.name == "synthetic" and ds.info["families"] == 2 and ds.info["seed"] == 3
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (1, 1)]


def test_missing_synthetic_module_does_not_break_other_loaders(
    market_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "canlib.synthetic", None)  # makes the import fail
    with pytest.raises(ImportError):
        build_dataset("synthetic", None)
    assert len(build_quietly("market1501", market_root).train) == 4
