"""Tests of the built-in synthetic dataset (smoke size: about a second per generation)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from canlib import synthetic as S
from canlib.errors import ConfigError, DatasetError
from canlib.synthetic import dataset, world

SMOKE = S.SIZES["smoke"]
# Market-1501's name pattern, as torchreid parses it, plus the frame and box fields.
NAME = re.compile(r"^([-\d]+)_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    started = time.monotonic()
    root = S.generate_synthetic(tmp_path_factory.mktemp("syn") / "smoke", SMOKE)
    print(f"smoke generation took {time.monotonic() - started:.2f} s")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _records(root: Path, folder: str) -> list[tuple[int, int]]:
    """(pid, camera 1-based) of every image of one folder, parsed by the Market regex."""
    out = []
    for path in sorted((root / folder).iterdir()):
        match = NAME.match(path.name)
        assert match, path.name
        out.append((int(match[1]), int(match[2])))
    return out


# -- determinism and timing ---------------------------------------------------------------


def test_same_seed_gives_same_bytes_and_another_seed_differs(smoke_root: Path, tmp_path: Path):
    again = S.generate_synthetic(tmp_path / "again", SMOKE)
    first, second = _files(smoke_root), _files(again)
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)
    other = _files(S.generate_synthetic(tmp_path / "other", SMOKE.with_seed(1)))
    shared = first.keys() & other.keys()
    assert first.keys() != other.keys() or any(first[k] != other[k] for k in shared)


def test_rendering_in_several_processes_writes_the_same_bytes(smoke_root: Path, tmp_path: Path):
    one = _files(S.generate_synthetic(tmp_path / "one", SMOKE, workers=1))
    three = _files(S.generate_synthetic(tmp_path / "three", SMOKE, workers=3))
    first = _files(smoke_root)
    assert one.keys() == three.keys() == first.keys()
    assert all(one[k] == three[k] == first[k] for k in one)


def test_smoke_generation_is_fast(tmp_path: Path):
    started = time.monotonic()
    S.generate_synthetic(tmp_path / "timed", SMOKE)
    elapsed = time.monotonic() - started
    print(f"smoke generation: {elapsed:.2f} s")
    assert elapsed < 10.0  # a generous guard on a shared 2-core machine; about 1 s alone


# -- layout and splits ----------------------------------------------------------------------


def test_layout_names_and_image_size(smoke_root: Path):
    assert sorted(p.name for p in smoke_root.iterdir()) == sorted([*S.FOLDERS, "README.txt"])
    for folder in S.FOLDERS:
        records = _records(smoke_root, folder)
        assert records
        assert all(1 <= cam <= SMOKE.num_cameras for _, cam in records)
    first = min((smoke_root / "query").iterdir())
    with Image.open(first) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == (SMOKE.width, SMOKE.height)


def test_splits_are_disjoint_and_sized_as_configured(smoke_root: Path):
    train = _records(smoke_root, "bounding_box_train")
    test = _records(smoke_root, "query") + _records(smoke_root, "bounding_box_test")
    train_pids = {p for p, _ in train}
    test_pids = {p for p, _ in test if p > 0}
    assert not train_pids & test_pids
    assert min(train_pids | test_pids) >= 1  # 0 is reserved for distractors
    # smoke: 8 ids per split (2 families of 2 and 4 single people), 6 images per id.
    assert len(train_pids) == 8 and len(test_pids) == 8
    per_id = defaultdict(int)
    for pid, _ in train + test:
        per_id[pid] += 1
    assert all(per_id[p] == 6 for p in train_pids | test_pids)


def test_one_query_per_test_id_and_camera_with_cross_camera_matches(smoke_root: Path):
    query = _records(smoke_root, "query")
    gallery = _records(smoke_root, "bounding_box_test")
    assert len(query) == len(set(query))  # one query per (pid, camera)
    gallery_cams = defaultdict(set)
    for pid, cam in gallery:
        gallery_cams[pid].add(cam)
    query_cams = defaultdict(set)
    for pid, cam in query:
        query_cams[pid].add(cam)
    for pid, cams in query_cams.items():
        assert len(cams) >= 2
        assert gallery_cams[pid] == cams  # every camera of the id has a query and the rest
        for cam in cams:
            assert gallery_cams[pid] - {cam}, "a query needs a cross-camera match"


def test_junk_and_distractors_only_in_the_test_gallery(smoke_root: Path):
    gallery = _records(smoke_root, "bounding_box_test")
    assert sum(p == -1 for p, _ in gallery) == SMOKE.num_junk
    assert sum(p == 0 for p, _ in gallery) == SMOKE.num_distractors
    names = [p.name for p in (smoke_root / "bounding_box_test").iterdir()]
    assert any(n.startswith("-1_c") for n in names) and any(n.startswith("0000_c") for n in names)
    for folder in ("bounding_box_train", "query"):
        assert all(p > 0 for p, _ in _records(smoke_root, folder))


# -- README and families -----------------------------------------------------------------


def test_readme_round_trip(smoke_root: Path):
    info = S.read_synthetic_info(smoke_root)
    assert S.SyntheticConfig.from_dict(info["config"]) == SMOKE
    assert info["seed"] == 0 and info["size"] == "smoke"
    for folder in S.FOLDERS:
        assert info["counts"][folder] == len(list((smoke_root / folder).iterdir()))
    for data in info["identities"].values():
        assert S.PersonAttributes.from_dict(data).to_dict() == data
    text = (smoke_root / "README.txt").read_text()
    assert "family 000" in text and "```json" in text  # readable by humans too


def test_family_structure_in_readme(smoke_root: Path):
    info = S.read_synthetic_info(smoke_root)
    split_of = {p: "train" for p, _ in _records(smoke_root, "bounding_box_train")}
    split_of.update({p: "test" for p, _ in _records(smoke_root, "query")})
    in_families = [p for f in info["families"] for p in f["pids"]]
    singles = [s["pid"] for s in info["singletons"]]
    assert sorted(in_families + singles) == sorted(split_of)
    # family_share 0.5 of 8 ids per split, families of 2: 2 families per split, 8 of 16 ids.
    assert len(info["families"]) == 4 and len(in_families) == 8 and info["family_share"] == 0.5
    assert all(split_of[s["pid"]] == s["split"] for s in info["singletons"])
    for family in info["families"]:
        members = [info["identities"][str(p)] for p in family["pids"]]
        assert len(members) == SMOKE.ids_per_family
        assert {split_of[p] for p in family["pids"]} == {family["split"]}
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                # Same global look (garment colours included), one differing detail.
                assert [k for k in a if a[k] != b[k]] == [family["detail"]]
                assert a["upper"] == b["upper"] and a["lower"] == b["lower"]


def test_family_members_differ_only_in_a_small_band_of_pixels():
    rng = np.random.default_rng(5)
    for kind in S.DETAIL_KINDS:
        _, members = S.sample_family(rng, 2, (kind,))
        # Same seed -> same pose, background and noise; front view shows every detail.
        a, b = (S.render_person(m, None, 11, view="front").astype(int) for m in members)
        diff = np.abs(a - b).max(axis=2) > 0
        rows = np.flatnonzero(diff.any(axis=1))
        assert rows.size, kind
        assert rows[-1] - rows[0] < 0.25 * a.shape[0], kind  # one body band
        assert diff.mean() < 0.05, kind  # a few pixels, not a colour blob


def test_upper_body_colour_close_within_family_and_far_across(smoke_root: Path):
    h, w = SMOKE.height, SMOKE.width

    def chest(image: np.ndarray) -> np.ndarray:
        return (
            image[int(0.3 * h) : int(0.42 * h), int(0.4 * w) : int(0.6 * w)].reshape(-1, 3).mean(0)
        )

    info = S.read_synthetic_info(smoke_root)
    # Rendered: neutral camera, same pose for everyone.
    rendered = {
        pid: chest(S.render_person(attrs, None, 3, view="front").astype(float))
        for f in range(len(info["families"]))
        for pid, attrs in S.family_members(info, f)
    }
    families = [f["pids"] for f in info["families"]]
    assert families
    for pids in families:
        assert np.abs(rendered[pids[0]] - rendered[pids[1]]).max() < 3
    upper = {f[0]: np.array(info["identities"][str(f[0])]["upper"]) for f in families}
    far = max(
        ((a[0], b[0]) for a in families for b in families),
        key=lambda ab: np.abs(upper[ab[0]] - upper[ab[1]]).sum(),
    )
    assert np.abs(rendered[far[0]] - rendered[far[1]]).max() > 40
    # Written files, through cameras, poses and occluders: per-id mean chest colour.
    per_id = defaultdict(list)
    for path in sorted(smoke_root.glob("*/*.jpg")):
        pid = int(path.name.split("_")[0])
        if pid > 0:
            per_id[pid].append(chest(np.asarray(Image.open(path), dtype=float)))
    mean = {pid: np.mean(v, axis=0) for pid, v in per_id.items()}
    within = [np.linalg.norm(mean[f[0]] - mean[f[1]]) for f in families]
    across = [
        np.linalg.norm(mean[f[0]] - mean[g[0]])
        for i, f in enumerate(families)
        for g in families[i + 1 :]
    ]
    assert np.mean(within) < 0.6 * np.mean(across)


def test_render_family_shape_and_pose_draws_independent_of_arguments():
    info = {"config": SMOKE.to_dict(), "families": [{"pids": [1, 2]}], "identities": {}}
    rng = np.random.default_rng(0)
    for pid in (1, 2):
        info["identities"][str(pid)] = S.sample_attributes(rng).to_dict()
    assert S.render_family(info, 0).shape == (SMOKE.height, 2 * SMOKE.width, 3)
    camera = S.neutral_camera()
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    S.sample_pose(r1, camera)
    S.sample_pose(r2, camera, view="back", crop="zoom")
    assert r1.random() == r2.random()
    with pytest.raises(ConfigError, match="family_id"):
        S.family_members(info, 3)


# -- writing safely ----------------------------------------------------------------------


def test_interrupted_generation_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    real_save, calls = dataset._save_jpeg, []

    def failing_save(image: np.ndarray, path: Path, quality: int) -> None:
        calls.append(path)
        if len(calls) > 10:
            raise KeyboardInterrupt
        real_save(image, path, quality)

    monkeypatch.setattr(dataset, "_save_jpeg", failing_save)
    with pytest.raises(KeyboardInterrupt):
        S.generate_synthetic(tmp_path / "data", SMOKE, workers=1)
    assert list(tmp_path.iterdir()) == []  # neither the root nor a temporary folder


def test_refuses_foreign_roots_and_replaces_previous_synthetic(tmp_path: Path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="foreign"):
        S.generate_synthetic(foreign, SMOKE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        S.generate_synthetic(tmp_path / "file", SMOKE)
    root = S.generate_synthetic(tmp_path / "data", SMOKE)
    S.generate_synthetic(root, SMOKE.with_seed(3))
    assert S.read_synthetic_info(root)["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "file", "foreign"]


def test_read_info_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        S.read_synthetic_info(tmp_path)
    (tmp_path / "README.txt").write_text("hello\n```json\n{not json\n```\n")
    with pytest.raises(DatasetError, match="malformed"):
        S.read_synthetic_info(tmp_path)


def test_ensure_synthetic_uses_cache_and_checks_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("CANLIB_CACHE", str(tmp_path / "cache"))
    root = S.ensure_synthetic(size="smoke", seed=2)
    assert root == tmp_path / "cache" / "synthetic" / "smoke-seed2"
    assert S.read_synthetic_info(root)["seed"] == 2

    def no_generation(*args, **kwargs):
        raise AssertionError("should reuse the existing dataset")

    with monkeypatch.context() as m:
        m.setattr(S, "generate_synthetic", no_generation)
        assert S.ensure_synthetic(size="smoke", seed=2) == root
    # The same folder asked for another seed is regenerated.
    assert S.read_synthetic_info(S.ensure_synthetic(root, size="smoke", seed=4))["seed"] == 4
    with pytest.raises(ConfigError, match="smoke"):
        S.ensure_synthetic(size="huge")


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("train_ids", 0),
        ("family_share", 1.5),
        ("scenes_per_camera", 0),
        ("ids_per_family", 12),  # more than the 9 values any detail has
        ("images_per_id", 5),  # below 2 x max cameras per id (3)
        ("cameras_per_id", (1, 3)),
        ("cameras_per_id", (3, 2)),
        ("num_cameras", 7),
        ("height", 8),
        ("jpeg_quality", 100),
        ("occlusion_prob", 1.5),
        ("occlusion_prob", "0.5"),
        ("seed", -1),
        ("num_junk", True),
        ("detail_kinds", ("shoes", "scarf")),
        ("test_ids", 1500),  # 8 + 1500 ids: over Market's 1501 pids
    ],
)
def test_bad_config_names_the_field(field: str, value: object):
    message = "identities" if field == "test_ids" else field
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(SMOKE, **{field: value})


def test_config_dict_round_trip_and_unknown_field():
    assert S.SyntheticConfig.from_dict(S.SIZES["default"].to_dict()) == S.SIZES["default"]
    with pytest.raises(ConfigError, match="valid fields"):
        S.SyntheticConfig.from_dict({"families": 3})
    default = S.SIZES["default"]
    # Market-1501: 751 train ids with about 17 images each.
    assert 700 <= default.num_train_ids <= 800 and 12 <= default.images_per_id <= 20
    assert all(f.metadata.get("source") for f in dataclasses.fields(S.SyntheticConfig))


@pytest.mark.filterwarnings("ignore:market1501 at")  # smaller than the published release
def test_market1501_parser_reads_the_output(smoke_root: Path):
    datasets = pytest.importorskip("canlib.datasets")
    data = datasets.build_dataset("market1501", smoke_root)
    assert sorted({r.pid for r in data.train}) == list(range(8))
    assert len(data.query) == len(list((smoke_root / "query").iterdir()))
    assert len(data.gallery) == len(list((smoke_root / "bounding_box_test").iterdir()))
    # The "synthetic" loader reuses the dataset already there (same size and seed).
    same = datasets.build_dataset("synthetic", smoke_root, size="smoke")
    assert [r.pid for r in same.query] == [r.pid for r in data.query]


def test_pid_families_inverts_the_family_lists():
    from canlib.synthetic import pid_families

    info = {"families": [{"family": 0, "pids": [1, 2]}, {"family": 1, "pids": [3, 4, 5]}]}
    assert pid_families(info) == {1: 0, 2: 0, 3: 1, 4: 1, 5: 1}


# -- the design: details survive every camera, backgrounds vary, masks ----------------------


def test_family_details_differ_by_the_minimum_contrast_as_seen():
    # Worked by hand from the palette: shoes never pair black (28,28,32) with navy
    # (38,46,84), 55 levels apart; a sleeve family needs skin and garment 150 apart.
    rng = np.random.default_rng(0)
    for _ in range(200):
        kind, members = S.sample_family(rng, 3)
        assert kind in ("shoes", "hat", "belt")  # sleeves have only two family values
        seen = [np.asarray(world._seen_colour(members[0], kind, getattr(m, kind))) for m in members]
        for i in range(3):
            for j in range(i):
                assert np.linalg.norm(seen[i] - seen[j]) >= 150
    black, navy = S.ACCESSORY_COLOURS["black"], S.ACCESSORY_COLOURS["navy"]
    assert np.linalg.norm(np.subtract(black, navy)) < 150


def test_masks_match_the_written_images(smoke_root: Path):
    names = sorted(f"query/{p.name}" for p in (smoke_root / "query").iterdir())[:4]
    masks = S.render_masks(smoke_root, names)
    info = S.read_synthetic_info(smoke_root)
    for name in names:
        mask = masks[name]
        image = np.asarray(Image.open(smoke_root / name), dtype=float)
        assert mask.shape == image.shape[:2] and mask.max() < len(S.MASK_LABELS)
        person = mask > 0
        # A person of about 0.86 x 128 rows and a fifth of the width covers 8-30% of the box.
        assert 0.08 < person.mean() < 0.3
        rows = np.flatnonzero(person.any(axis=1))
        assert rows[0] >= 0 and rows[-1] <= image.shape[0] - 1
        # Shoes lie in the lowest tenth of the person, a cap's region in the top tenth.
        height = rows[-1] - rows[0] + 1
        shoe_rows = np.flatnonzero((mask == S.MASK_LABELS.index("shoes")).any(axis=1))
        if shoe_rows.size:
            assert shoe_rows[0] >= rows[-1] - 0.12 * height
        hat_rows = np.flatnonzero((mask == S.MASK_LABELS.index("hat")).any(axis=1))
        if hat_rows.size:
            assert hat_rows[-1] <= rows[0] + 0.12 * height
    assert info["config"]["scenes_per_camera"] >= 2
    with pytest.raises(DatasetError, match="not an image"):
        S.render_masks(smoke_root, ["query/nope.jpg"])


def test_each_camera_shows_several_backgrounds():
    camera = S.sample_camera(np.random.default_rng(0), scenes=4)
    seen = {S.sample_pose(np.random.default_rng(i), camera).scene for i in range(200)}
    assert seen == {0, 1, 2, 3}
    walls = {sc.wall for sc in camera.scenes}
    assert len(walls) == 4
    assert S.CameraStyle.from_dict(camera.to_dict()) == camera


def test_oracle_told_where_the_detail_is_tells_family_members_apart(tmp_path: Path):
    # Families only, in every camera including the low-resolution one: the oracle compares
    # the written pixels of the detail region (standardised by the rest of the person) and
    # must find the query's own identity first among its family's gallery images. A perfect
    # oracle would score 1; the full default test set scores 0.98 (347 family queries).
    config = S.SyntheticConfig(
        train_ids=2, test_ids=30, family_share=1.0, num_junk=0, num_distractors=0, seed=3
    )
    root = S.generate_synthetic(tmp_path / "oracle", config)
    result = S.detail_oracle(root)
    print("oracle", result)
    assert result["queries"] >= 100
    assert result["rank1"] >= 0.95
    assert set(result["per_camera"]) == set(range(1, 7))
