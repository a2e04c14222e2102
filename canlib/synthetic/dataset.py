"""Writing, reading and checking the synthetic dataset in the Market-1501 layout."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError
from canlib.rules import JUNK_PID
from canlib.synthetic.render import _render, render_person
from canlib.synthetic.world import (
    ACCESSORY_COLOURS,
    FOLDERS,
    FORMAT_VERSION,
    GENERATOR,
    JUNK_CROPS,
    MASK_LABELS,
    MIN_DETAIL_CONTRAST,
    README_NAME,
    SIZES,
    VIEWS,
    CameraStyle,
    PersonAttributes,
    SyntheticConfig,
    sample_attributes,
    sample_camera,
    sample_family,
    sample_pose,
)

logger = logging.getLogger(__name__)

# Streams of np.random.default_rng([seed, stream, index]): one per independent purpose, so
# that adding images never changes the ones drawn before.
_PLAN_STREAM, _IMAGE_STREAM, _JUNK_PERSON_STREAM = 1, 2, 3

_DESIGN_TEXT = """
Design (canlib.synthetic's docstring has the long form; nothing is tuned to a model):
  - Look-alike families clone one outfit (as ClonedPerson does) and differ in one detail seen
    from every view and confined to one body band: shoes, cap, belt or sleeve length (the
    last in families of two only). The members' detail colours differ by at least
    MIN_DETAIL_CONTRAST RGB levels as the camera sees them, and each detail is about 4+
    pixels tall, so it survives every camera (detail_oracle checks this on these pixels).
  - Only family_share of the identities are in families; the others are independent people.
  - Each camera shows several backgrounds (scenes_per_camera), one per image; position and
    scale are jittered; identities appear in 2-6 cameras. As in PersonX, viewpoint,
    background, illumination and camera optics are independent factors.
  - Person and detail masks: canlib.synthetic.render_masks(root, names).
"""


@dataclass(frozen=True)
class _Item:
    folder: str
    name: str
    pid: int
    camera: int  # 0-based
    view: str | None
    crop: str  # "person", a JUNK_CROPS entry, or "background"


class _Frames:
    """Hands out Market-style (sequence, frame, box) triples that never repeat per camera."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: dict[tuple[int, int, int], int] = {}

    def tracklet(self, camera: int, count: int) -> list[tuple[int, int, int]]:
        seq = int(self.rng.integers(1, 7))
        start = int(self.rng.integers(1, 150000))
        step = int(self.rng.integers(4, 30))
        out = []
        for j in range(count):
            key = (camera, seq, start + j * step)
            self.used[key] = self.used.get(key, 0) + 1
            out.append((seq, start + j * step, self.used[key]))
        return out


def _file_name(pid: int, camera: int, frame: tuple[int, int, int]) -> str:
    seq, number, box = frame
    prefix = "-1" if pid == JUNK_PID else f"{pid:04d}"
    return f"{prefix}_c{camera + 1}s{seq}_{number:06d}_{box:02d}.jpg"


def _plan(config: SyntheticConfig) -> tuple[dict[str, Any], list[_Item]]:
    """Draw cameras, families, splits and every file name; returns (info, items)."""
    rng = np.random.default_rng([config.seed, _PLAN_STREAM])
    cameras = [
        sample_camera(rng, low_res=(i == config.num_cameras - 1), scenes=config.scenes_per_camera)
        for i in range(config.num_cameras)
    ]
    # Groups: look-alike families (a cloned outfit, one differing detail) and single people
    # drawn independently, in a random order of pids across both splits.
    groups: list[tuple[str, str | None, list[PersonAttributes]]] = []
    for split, ids in (("train", config.train_ids), ("test", config.test_ids)):
        n_families = config.families_in(split)
        for _ in range(n_families):
            kind, members = sample_family(rng, config.ids_per_family, config.detail_kinds)
            groups.append((split, kind, members))
        for _ in range(ids - n_families * config.ids_per_family):
            groups.append((split, None, [sample_attributes(rng)]))
    order = rng.permutation(len(groups))
    families, singletons, identities, splits = [], [], {}, {}
    next_pid = 1
    for g in order:
        split, kind, members = groups[int(g)]
        pids = list(range(next_pid, next_pid + len(members)))
        next_pid += len(members)
        identities.update(zip(pids, members))
        splits.update(dict.fromkeys(pids, split))
        if kind is None:
            singletons.append({"pid": pids[0], "split": split})
        else:
            families.append({"family": len(families), "split": split, "detail": kind, "pids": pids})
    # Cameras are not equally busy (Market-1501's are not either), but none is rare.
    popularity = 0.5 / config.num_cameras + 0.5 * rng.dirichlet(np.full(config.num_cameras, 2.0))
    frames = _Frames(rng)
    items: list[_Item] = []
    for pid in sorted(identities):
        items += _identity_items(config, rng, frames, cameras, popularity, pid, splits[pid])
    items += _extra_items(config, rng, frames, popularity)
    info = {
        "generator": GENERATOR,
        "format_version": FORMAT_VERSION,
        "seed": config.seed,
        "size": next((n for n, c in SIZES.items() if c.with_seed(config.seed) == config), None),
        "config": config.to_dict(),
        "counts": {f: sum(it.folder == f for it in items) for f in FOLDERS},
        "cameras": [c.to_dict() for c in cameras],
        "family_share": round(sum(len(f["pids"]) for f in families) / max(1, len(identities)), 4),
        "families": families,
        "singletons": singletons,
        "identities": {str(pid): identities[pid].to_dict() for pid in sorted(identities)},
    }
    info["counts"]["junk"] = sum(it.pid == JUNK_PID for it in items)
    info["counts"]["distractors"] = sum(it.pid == 0 for it in items)
    return info, items


def _identity_items(
    config: SyntheticConfig,
    rng: np.random.Generator,
    frames: _Frames,
    cameras: list[CameraStyle],
    popularity: np.ndarray,
    pid: int,
    split: str,
) -> list[_Item]:
    lo, hi = config.cameras_per_id
    k = int(rng.integers(lo, hi + 1))
    cams = sorted(int(c) for c in rng.choice(config.num_cameras, k, replace=False, p=popularity))
    # Two images per camera at least, so a test query always leaves a same-camera gallery
    # image; the rest is spread at random.
    counts = 2 + rng.multinomial(config.images_per_id - 2 * k, np.full(k, 1.0 / k))
    items = []
    for cam, count in zip(cams, counts):
        # One tracklet per camera: a person walks past in one direction, so one view.
        probs = np.asarray(cameras[cam].view_probs)
        view = VIEWS[rng.choice(4, p=probs / probs.sum())]
        query = int(rng.integers(count)) if split == "test" else -1
        for j, frame in enumerate(frames.tracklet(cam, int(count))):
            folder = "query" if j == query else f"bounding_box_{split}"
            items.append(_Item(folder, _file_name(pid, cam, frame), pid, cam, view, "person"))
    return items


def _extra_items(
    config: SyntheticConfig, rng: np.random.Generator, frames: _Frames, popularity: np.ndarray
) -> list[_Item]:
    """Junk (pid -1, bad crops of people) and distractors (pid 0, background-only boxes)."""
    items = []
    for pid, count in ((JUNK_PID, config.num_junk), (0, config.num_distractors)):
        for _ in range(count):
            cam = int(rng.choice(config.num_cameras, p=popularity))
            crop = JUNK_CROPS[rng.integers(len(JUNK_CROPS))] if pid == JUNK_PID else "background"
            name = _file_name(pid, cam, frames.tracklet(cam, 1)[0])
            items.append(_Item("bounding_box_test", name, pid, cam, None, crop))
    return items


def _render_item(
    item: _Item, index: int, info: dict[str, Any], config: SyntheticConfig
) -> tuple[np.ndarray, int, np.ndarray]:
    """Pixels, JPEG quality and MASK_LABELS map of one planned image."""
    rng = np.random.default_rng([config.seed, _IMAGE_STREAM, index])
    camera = CameraStyle.from_dict(info["cameras"][item.camera])
    size = (config.height, config.width)
    if item.crop == "background":
        pose = sample_pose(rng, camera)
        image, labels = _render(None, camera, pose, rng, size, 0.6)
    else:
        if item.pid == JUNK_PID:  # junk: a bad crop of some passer-by
            attrs = sample_attributes(
                np.random.default_rng([config.seed, _JUNK_PERSON_STREAM, index])
            )
        else:
            attrs = PersonAttributes.from_dict(info["identities"][str(item.pid)])
        pose = sample_pose(rng, camera, view=item.view, crop=item.crop)
        image, labels = _render(attrs, camera, pose, rng, size, config.occlusion_prob)
    quality = int(np.clip(config.jpeg_quality + camera.jpeg_offset + rng.integers(-4, 5), 20, 95))
    return image, quality, labels


def _save_jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(image).save(path, format="JPEG", quality=quality)


def _dump_info(info: dict[str, Any]) -> str:
    """JSON with one top-level key, camera, family or identity per line (diff- and eye-friendly)."""

    def one(value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    parts = []
    for key in sorted(info):
        value = info[key]
        if isinstance(value, list):
            body = "[\n" + ",\n".join(f"  {one(v)}" for v in value) + "\n ]"
        elif isinstance(value, dict) and any(isinstance(v, (dict, list)) for v in value.values()):
            body = "{\n" + ",\n".join(f"  {one(k)}: {one(v)}" for k, v in value.items()) + "\n }"
        else:
            body = one(value)
        parts.append(f" {one(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}"


def _readme_text(info: dict[str, Any]) -> str:
    """Human-readable summary followed by the exact info as a fenced JSON block."""
    names = {tuple(c): n for n, c in ACCESSORY_COLOURS.items()}
    config, counts = info["config"], info["counts"]
    lines = [
        "canlib synthetic person re-identification dataset (Market-1501 layout)",
        "",
        (
            f"Written by {GENERATOR} (format {info['format_version']}), seed {info['seed']}, "
            f"size preset {info['size'] or '(custom)'}. Regenerate with the same seed and"
        ),
        "parameters to get the same bytes. Procedural pedestrians, not real people.",
        "",
        (
            f"bounding_box_train: {counts['bounding_box_train']} images of "
            f"{config['train_ids']} identities"
        ),
        f"query: {counts['query']} images (one per test identity per camera)",
        (
            f"bounding_box_test: {counts['bounding_box_test']} images, including "
            f"{counts['junk']} junk (pid -1) and {counts['distractors']} distractors (pid 0000)"
        ),
        "",
        "Parameters:",
        *(f"  {k} = {v}" for k, v in config.items()),
        "",
        *_DESIGN_TEXT.replace("MIN_DETAIL_CONTRAST", f"{MIN_DETAIL_CONTRAST:.0f}")
        .strip("\n")
        .splitlines(),
        "",
        (
            f"Share of identities in look-alike families: {info['family_share']:.1%} "
            f"({len(info['families'])} families, {len(info['singletons'])} single identities)."
        ),
        "Families: members share the whole global look and differ in exactly one local detail.",
    ]
    for fam in info["families"]:
        values = []
        for pid in fam["pids"]:
            value = info["identities"][str(pid)][fam["detail"]]
            label = (
                names.get(tuple(value), str(value))
                if isinstance(value, list)
                else str(value or "none")
            )
            values.append(f"{pid:04d} {label}")
        lines.append(
            f"  family {fam['family']:03d} ({fam['split']}, {fam['detail']}): " + ", ".join(values)
        )
    lines += ["", "Machine-readable copy (canlib.synthetic.read_synthetic_info):", "```json"]
    return "\n".join(lines) + "\n" + _dump_info(info) + "\n```\n"


def render_masks(root: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Person and detail-region masks of a written dataset's images, rendered again.

    Every image is drawn again from the plan its README records (same seed, same draws). A
    mask is a uint8 (H, W) map of MASK_LABELS indices: 0 background or occluder, 1 the person,
    2-5 the family detail regions (shoes, hat, belt, sleeves), labelled whether the detail is
    worn or not; ``mask > 0`` is the person mask.

    Args:
        root: A dataset written by :func:`generate_synthetic`.
        names: Image paths relative to ``root`` ("query/0001_c1s1_000151_01.jpg"); None for
            every image.

    Returns:
        dict from relative path to mask.
    """
    info = read_synthetic_info(root)
    config = SyntheticConfig.from_dict(info["config"])
    _, items = _plan(config)
    index = {f"{it.folder}/{it.name}": i for i, it in enumerate(items)}
    wanted = list(index) if names is None else list(names)
    missing = [n for n in wanted if n not in index]
    if missing:
        raise DatasetError(
            f"{missing[0]} is not an image of the synthetic dataset in {root}; expected a path "
            "like 'query/0001_c1s1_000151_01.jpg'."
        )
    return {n: _render_item(items[index[n]], index[n], info, config)[2] for n in wanted}


def detail_oracle(root: str | Path) -> dict[str, Any]:
    """Rank-1 of an oracle told where each family's distinguishing detail is.

    Each test query of a family member is matched to the nearest of its family's gallery
    images that the Market-1501 protocol keeps (not the same identity in the same camera). An
    image is described by the mean colour of the written pixels in the detail region
    (:func:`render_masks`), standardised per channel by the rest of the person (the shared
    outfit): this cancels the camera's per-channel affine colour changes and leaves blur,
    noise, JPEG and low resolution for the detail to survive. A hidden detail region (occluded
    or too small) counts as a miss. It measures the data, not any model.

    Args:
        root: A dataset written by :func:`generate_synthetic`.

    Returns:
        ``{"rank1", "queries", "hidden", "per_kind": {kind: rank1}, "per_camera": {cam: rank1}}``
        over the family queries (cameras 1-based).
    """
    root = Path(root)
    info = read_synthetic_info(root)
    family_of = {p: f for f in info["families"] for p in f["pids"] if f["split"] == "test"}
    records = _family_records(root, family_of)
    feats = _detail_features(root, records, family_of)
    hits, hidden = [], 0
    per_kind: dict[str, list[bool]] = {}
    per_camera: dict[int, list[bool]] = {}
    gallery = [r for r in records if r[0] == "bounding_box_test"]
    for _, pid, cam, name in (r for r in records if r[0] == "query"):
        fam, query = family_of[pid], feats[name]
        hidden += query is None
        cands = [
            (float(np.linalg.norm(feats[g] - query)), gpid)
            for _, gpid, gcam, g in gallery
            if query is not None
            and family_of[gpid] is fam
            and not (gpid == pid and gcam == cam)
            and feats[g] is not None
        ]
        hit = bool(cands) and min(cands)[1] == pid
        hits.append(hit)
        per_kind.setdefault(fam["detail"], []).append(hit)
        per_camera.setdefault(cam, []).append(hit)
    return {
        "rank1": float(np.mean(hits)) if hits else float("nan"),
        "queries": len(hits),
        "hidden": hidden,
        "per_kind": {k: float(np.mean(v)) for k, v in sorted(per_kind.items())},
        "per_camera": {c: float(np.mean(v)) for c, v in sorted(per_camera.items())},
    }


def _family_records(root: Path, family_of: dict[int, dict]) -> list[tuple[str, int, int, str]]:
    """The test images of family members: ``(folder, pid, camera 1-based, relative name)``."""
    records = []
    for folder in ("query", "bounding_box_test"):
        for path in sorted((root / folder).glob("*.jpg")):
            pid = int(path.name.split("_")[0])
            if pid in family_of:
                camera = int(path.name.split("_")[1][1])
                records.append((folder, pid, camera, f"{folder}/{path.name}"))
    return records


def _detail_features(
    root: Path, records: list[tuple[str, int, int, str]], family_of: dict[int, dict]
) -> dict[str, np.ndarray | None]:
    """Each image's detail colour, standardised by the rest of the person (None: hidden)."""
    masks = render_masks(root, [r[3] for r in records])
    feats: dict[str, np.ndarray | None] = {}
    for _, pid, _, name in records:
        image = np.asarray(Image.open(root / name), dtype=np.float64)
        code = MASK_LABELS.index(family_of[pid]["detail"])
        region, rest = masks[name] == code, (masks[name] > 0) & (masks[name] != code)
        if region.sum() < 2 or rest.sum() < 10:
            feats[name] = None
            continue
        others = image[rest]
        feats[name] = (image[region].mean(0) - others.mean(0)) / np.maximum(others.std(0), 1.0)
    return feats


def read_synthetic_info(root: str | Path) -> dict[str, Any]:
    """Parse the JSON block of a synthetic dataset's README.txt.

    Args:
        root: Dataset root (holding README.txt).

    Returns:
        The info dict: generator, format_version, seed, size, config, counts, cameras,
        families (``{"family", "split", "detail", "pids"}``) and identities (pid string ->
        attribute dict).

    Raises:
        DatasetNotFoundError: No README.txt in ``root``.
        DatasetError: The README has no valid JSON block written by this generator.
    """
    path = Path(root) / README_NAME
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} not found; expected the README.txt of a canlib synthetic dataset."
        )
    text = path.read_text(encoding="utf-8")
    start = text.rfind("```json\n")
    end = text.rfind("\n```")
    if start < 0 or end <= start:
        raise DatasetError(f"{path} holds no ```json block; expected a canlib synthetic README.")
    try:
        info = json.loads(text[start + len("```json\n") : end])
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} holds a malformed JSON block ({exc}).") from exc
    if not isinstance(info, dict) or info.get("generator") != GENERATOR:
        raise DatasetError(f"{path} was not written by {GENERATOR}.")
    return info


def pid_families(info: dict[str, Any]) -> dict[int, int]:
    """pid -> family index, for :func:`canlib.evaluate.top1_breakdown`'s ``group_of``.

    Args:
        info: As returned by :func:`read_synthetic_info`.
    """
    return {int(pid): fam["family"] for fam in info["families"] for pid in fam["pids"]}


def family_members(info: dict[str, Any], family_id: int) -> list[tuple[int, PersonAttributes]]:
    """The ``(pid, attributes)`` of each member of one family.

    Args:
        info: As returned by :func:`read_synthetic_info`.
        family_id: Index into ``info["families"]``.
    """
    families = info["families"]
    if not 0 <= family_id < len(families):
        raise ConfigError(f"family_id must be in 0..{len(families) - 1}, got {family_id}.")
    return [
        (pid, PersonAttributes.from_dict(info["identities"][str(pid)]))
        for pid in families[family_id]["pids"]
    ]


def render_family(
    info: dict[str, Any],
    family_id: int,
    *,
    seed: int = 0,
    view: str | None = "front",
    camera: CameraStyle | None = None,
) -> np.ndarray:
    """One family side by side, each member in the same pose, background and camera.

    Args:
        info: As returned by :func:`read_synthetic_info`.
        family_id: Index into ``info["families"]``.
        seed: Seed of the shared pose and background (default 0).
        view: One of VIEWS (default "front", where every detail is visible); None draws one.
        camera: Camera style; None for :func:`neutral_camera`.

    Returns:
        uint8 array (height, width * members, 3).
    """
    size = (info["config"]["height"], info["config"]["width"])
    images = [
        render_person(attrs, camera, seed, size=size, view=view)
        for _, attrs in family_members(info, family_id)
    ]
    return np.concatenate(images, axis=1)


def _info_or_none(root: Path) -> dict[str, Any] | None:
    """:func:`read_synthetic_info`, or None where ``root`` holds no synthetic dataset."""
    try:
        return read_synthetic_info(root)
    except DatasetError:
        return None


def _check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise DatasetError(
            f"{root} exists and is not a folder; expected a folder for the synthetic dataset."
        )
    if root.is_dir() and any(root.iterdir()) and _info_or_none(root) is None:
        raise DatasetError(
            f"{root} is not empty and holds no canlib synthetic dataset; "
            "choose an empty or new folder."
        )


def _replace_dir(new: Path, root: Path) -> None:
    """Move ``new`` to ``root``, replacing an old dataset there; ``root`` is never half written."""
    if root.exists():
        old = root.with_name(f".{root.name}.old-{os.getpid()}")
        root.rename(old)
        new.rename(root)
        shutil.rmtree(old)
    else:
        new.rename(root)


def generate_synthetic(
    root: str | Path,
    config: SyntheticConfig = SIZES["default"],
    *,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write the synthetic dataset into ``root`` in the Market-1501 layout.

    The files are written into a hidden temporary sibling folder which is renamed to
    ``root`` only when complete, so an interrupted generation never leaves a dataset that
    looks complete. A previous synthetic dataset in ``root`` is replaced.

    Args:
        root: Target folder: absent, empty, or a previous synthetic dataset.
        config: Sizes and seed (default ``SIZES["default"]``).
        progress: Show a tqdm progress bar (default False).
        workers: Processes rendering at once (default: one per CPU core). Every image has
            its own random stream, so the bytes written do not depend on this.

    Returns:
        ``root`` as a Path.

    Raises:
        DatasetError: ``root`` is a file, or a non-empty folder that is not a synthetic dataset.
    """
    root = Path(root).expanduser().absolute()
    _check_root(root)
    started = time.monotonic()
    info, items = _plan(config)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        for folder in FOLDERS:
            (tmp / folder).mkdir()
        _render_to(tmp, items, info, config, workers or os.cpu_count() or 1, progress)
        (tmp / README_NAME).write_text(_readme_text(info), encoding="utf-8")
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "synthetic dataset (seed %d, %d images) written to %s in %.1f s",
        config.seed,
        len(items),
        root,
        time.monotonic() - started,
    )
    return root


def _render_to(
    folder: Path, items: list, info: dict, config: SyntheticConfig, workers: int, progress: bool
) -> None:
    """Render and save ``items`` into ``folder``, in ``workers`` processes (chunks of 64)."""
    chunks = [range(start, min(start + 64, len(items))) for start in range(0, len(items), 64)]
    # Each job carries only its own items, not the whole plan.
    jobs = [(folder, [items[i] for i in chunk], chunk, info, config) for chunk in chunks]
    bar = tqdm(total=len(items), desc="synthetic", unit="img", disable=not progress)
    if workers <= 1:
        for job in jobs:
            bar.update(_render_chunk(*job))
    else:
        # fork: the workers inherit the module.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for done in as_completed([pool.submit(_render_chunk, *job) for job in jobs]):
                bar.update(done.result())
    bar.close()


def _render_chunk(
    folder: Path, items: list, indices: range, info: dict, config: SyntheticConfig
) -> int:
    for item, index in zip(items, indices):
        image, quality, _ = _render_item(item, index, info, config)
        _save_jpeg(image, folder / item.folder / item.name, quality)
    return len(items)


def default_cache_dir() -> Path:
    """``$CANLIB_CACHE`` if set, else ``~/.cache/canlib``."""
    return Path(os.environ.get("CANLIB_CACHE") or Path.home() / ".cache" / "canlib").expanduser()


def ensure_synthetic(
    root: str | Path | None = None, *, size: str = "default", seed: int = 0, progress: bool = False
) -> Path:
    """Return a synthetic dataset of the requested size and seed, generating it if needed.

    Args:
        root: Dataset folder; None for ``default_cache_dir()/synthetic/<size>-seed<seed>``.
        size: A key of SIZES (default "default").
        seed: Generator seed (default 0).
        progress: Show a progress bar while generating (default False).

    Returns:
        The dataset root. An existing dataset is reused only when its README records
        exactly this config and format; otherwise it is regenerated.
    """
    if size not in SIZES:
        raise ConfigError(f"Unknown synthetic size {size!r}; expected one of {', '.join(SIZES)}.")
    config = SIZES[size].with_seed(seed)
    if root is None:
        root = default_cache_dir() / "synthetic" / f"{size}-seed{seed}"
    root = Path(root).expanduser().absolute()
    if (root / README_NAME).is_file():
        info = _info_or_none(root) or {}
        if info.get("format_version") == FORMAT_VERSION and info.get("config") == config.to_dict():
            return root
        logger.warning("%s holds another synthetic dataset; regenerating it for %s", root, config)
    return generate_synthetic(root, config, progress=progress)
