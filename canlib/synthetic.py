"""The built-in synthetic person re-identification dataset, written in the Market-1501 layout.

No real dataset can be downloaded everywhere, yet a reader wants to see the whole pipeline
(parsing, sampling, training, the Market-1501 evaluation protocol) run before fetching
Market-1501. :func:`generate_synthetic` draws a small, realistic-looking dataset of procedural
pedestrians and writes it exactly as Market-1501 is laid out::

    root/
      bounding_box_train/0001_c1s2_004211_01.jpg ...
      bounding_box_test/ ... plus junk (-1_c...) and distractors (0000_c...)
      query/               one image per test identity per camera
      README.txt           seed, parameters and family structure (human text + a JSON block)

Design (format 2; every choice is ours, none tuned to make a model ordering appear):

- *Identities are distinguishable in every camera.* Identities in a look-alike *family* share
  one cloned outfit (the paper's Figure 1 motivation; ClonedPerson, Wang et al. CVPR 2022,
  clones outfits to make look-alikes, and we borrow that) and differ in exactly one detail
  seen from every view and confined to one body band: shoes (feet), a cap (crown of the
  head), a belt (waist) or sleeve length (forearms). Members' detail colours, as the camera
  sees them (a bare head shows hair, a short sleeve skin), differ by MIN_DETAIL_CONTRAST RGB
  levels, and each detail is at least about 4 pixels tall at 128 px, so it survives blur,
  colour cast, noise, JPEG and the low-resolution camera. :func:`detail_oracle` measures
  this on the written pixels; tests/test_synthetic.py asserts it.
- *Backgrounds are no shortcut.* Each camera shows several scenes (``scenes_per_camera``),
  one drawn per image, with the person's position and scale jittered, and identities are
  spread over 2-6 of the 6 cameras as in Market-1501. Like PersonX (Sun and Zheng, CVPR
  2019), which varies one factor at a time, viewpoint, background, illumination and camera
  optics are separate random factors drawn independently of the identity, so each can be
  held fixed (:func:`render_person` takes a view, a camera and a seed).
- *Look-alikes are part of the population.* Only ``family_share`` of the identities (0.3 by
  default) belong to families; the others are drawn independently, as most people in
  Market-1501 have no near twin. ``pid_families`` and ``canlib.evaluate.top1_breakdown`` tell
  how often a query's top wrong match is a family member.
- *Masks are known.* :func:`render_masks` renders any written image's person mask and
  detail regions again (no extra files, so the Market-1501 parsers see the usual layout).

Everything is deterministic for a given seed (same seed, same bytes): the plan is drawn from
one generator and every image from its own ``np.random.default_rng([seed, stream, index])``.
Drawing uses vectorised numpy masks on a 2x supersampled canvas; PIL only encodes JPEGs.
This module knows nothing about models.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from canlib.errors import ConfigError, DatasetError, DatasetNotFoundError

logger = logging.getLogger(__name__)

GENERATOR = "canlib.synthetic"
FORMAT_VERSION = 2
README_NAME = "README.txt"
FOLDERS = ("bounding_box_train", "bounding_box_test", "query")
VIEWS = ("front", "back", "left", "right")
# Details a family may differ in: each is seen from every view and sits in one body band
# (head, arms, waist, feet). A chest badge or a waist bag is hidden from some views, so they
# stay ordinary accessories of the base look, never the only difference within a family.
DETAIL_KINDS = ("shoes", "hat", "belt", "sleeves")
# Labels of render_mask: 0 is no person (background or an occluder); the family detail
# regions get their own label whether the detail is worn or not (a bare head, a plain waist).
MASK_LABELS = ("background", "person", "shoes", "hat", "belt", "sleeves")
# Ours: the least RGB distance between the values family members take at their detail. The
# camera model shrinks a colour difference by up to contrast 0.8 x gain 0.9 x light 0.88 =
# 0.63, and the low-resolution camera's blur keeps about 60% of a 4-pixel band, so 150
# levels keep about 57, ten times the strongest sensor noise (sd 6). 100 levels (38 kept)
# proved too few on rendered pixels: an oracle told where the detail is then found the right
# family member for only 0.92 of the queries (0.96 with 150, both before it standardised the
# colours; see detail_oracle and tests/test_synthetic.py).
MIN_DETAIL_CONTRAST = 150.0
SLEEVES = ("short", "three_quarter", "long")
UPPER_TEXTURES = ("solid", "stripes", "print", "two_tone")
LOWER_STYLES = ("trousers", "shorts", "skirt")
BACKGROUNDS = ("tiles", "bricks", "plain", "speckle")
JUNK_CROPS = ("sliver", "zoom", "shifted")

# Market-1501's own limits: 4-digit pids up to 1501 and cameras 1..6 (its parser checks both).
MAX_PID = 1501
MAX_CAMERAS = 6

Colour = tuple[int, int, int]

# Ours: realistic, muted accessory colours (shoes, caps, belts, badges, bags). Saturated
# blobs would be found by global pooling alone (REFERENCES.md, synthetic prototype).
ACCESSORY_COLOURS: dict[str, Colour] = {
    "black": (28, 28, 32),
    "white": (222, 222, 216),
    "grey": (120, 122, 126),
    "brown": (92, 62, 42),
    "tan": (176, 140, 98),
    "navy": (38, 46, 84),
    "darkred": (122, 34, 38),
    "olive": (92, 98, 56),
}

# (name, rgb, weight for upper garments, weight for lower garments): dark and neutral
# clothes dominate street scenes, jeans blue dominates trousers.
_GARMENTS: tuple[tuple[str, Colour, float, float], ...] = (
    ("black", (30, 30, 34), 0.16, 0.24),
    ("white", (226, 226, 222), 0.11, 0.03),
    ("grey", (128, 128, 132), 0.11, 0.12),
    ("navy", (36, 44, 86), 0.09, 0.12),
    ("jeans", (62, 86, 128), 0.03, 0.22),
    ("blue", (46, 90, 170), 0.07, 0.02),
    ("lightblue", (140, 178, 214), 0.05, 0.02),
    ("red", (178, 40, 44), 0.06, 0.01),
    ("darkred", (112, 30, 40), 0.04, 0.01),
    ("green", (52, 120, 70), 0.04, 0.02),
    ("olive", (96, 100, 58), 0.03, 0.04),
    ("khaki", (186, 168, 120), 0.05, 0.09),
    ("brown", (110, 74, 48), 0.04, 0.05),
    ("pink", (222, 150, 170), 0.03, 0.005),
    ("yellow", (220, 196, 70), 0.03, 0.005),
    ("purple", (96, 60, 130), 0.02, 0.005),
    ("orange", (224, 120, 50), 0.02, 0.005),
)
_SKIN: tuple[Colour, ...] = (
    (242, 206, 178),
    (226, 180, 146),
    (200, 150, 112),
    (170, 120, 84),
    (128, 86, 58),
    (92, 62, 44),
)
_HAIR: tuple[Colour, ...] = (
    (22, 20, 20),
    (48, 34, 26),
    (88, 60, 38),
    (170, 140, 90),
    (150, 150, 150),
)


def detail_values(kind: str) -> list[Any]:
    """The distinct values a family member may take for one detail kind.

    Args:
        kind: One of DETAIL_KINDS.

    Returns:
        Sleeve lengths for "sleeves", accessory colours for "shoes", and None (absent) plus
        accessory colours for "hat" and "belt".
    """
    if kind not in DETAIL_KINDS:
        raise ConfigError(f"Unknown detail kind {kind!r}; expected one of {DETAIL_KINDS}.")
    if kind == "sleeves":
        return list(SLEEVES)
    colours = list(ACCESSORY_COLOURS.values())
    return colours if kind == "shoes" else [None, *colours]


def _seen_colour(base: PersonAttributes, kind: str, value: Any) -> np.ndarray:
    """What the camera sees in a detail's region for one value (RGB; for sleeves the
    forearm, whose colour says the sleeve length: garment for long, skin for short)."""
    if kind == "sleeves":
        return np.asarray(base.skin if value == "short" else base.upper, float)
    if value is None:  # a bare head shows the hair, a waist without belt the garment
        return np.asarray(base.hair if kind == "hat" else base.upper, float)
    return np.asarray(value, float)


def _distinct_values(
    rng: np.random.Generator, base: PersonAttributes, kind: str, size: int
) -> list[Any] | None:
    """``size`` values of ``kind`` whose seen colours differ pairwise by MIN_DETAIL_CONTRAST,
    picked greedily in a random order; None when the base look allows no such set."""
    values = detail_values(kind)
    if kind == "sleeves":
        # Short and long sleeves differ by skin against garment on the forearm; three-quarter
        # sleeves differ from long ones only at the wrist, so they join no family.
        values = ["short", "long"]
    chosen: list[Any] = []
    for i in rng.permutation(len(values)):
        seen = _seen_colour(base, kind, values[i])
        if all(
            np.linalg.norm(seen - _seen_colour(base, kind, c)) >= MIN_DETAIL_CONTRAST
            for c in chosen
        ):
            chosen.append(values[i])
        if len(chosen) == size:
            return chosen
    return None


def _src(why: str) -> dict[str, str]:
    return {"source": f"ours: {why}"}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and appearance knobs of the synthetic dataset (all ours: the paper has none).

    Args:
        train_ids: Identities in the training split (default 750; Market-1501 has 751).
        test_ids: Identities in the test split (default 300; Market-1501 has 750, fewer here
            so that evaluating a model stays cheap on 2 CPU cores).
        family_share: Share of each split's identities that belong to a look-alike family
            (default 0.3); the others are drawn independently, as most people in Market-1501
            have no near twin. Whole families go to one split.
        ids_per_family: Identities per look-alike family (default 3).
        images_per_id: Images per identity, spread over its cameras (default 12).
        cameras_per_id: Inclusive (min, max) number of cameras an identity appears in
            (default (2, 6), as in Market-1501); at least 2 so every query has a
            cross-camera match.
        num_cameras: Number of cameras, 2..6 (default 6, as Market-1501); the last one is
            low-resolution, like Market-1501's camera 6.
        scenes_per_camera: Backgrounds each camera shows, one drawn per image (default 4), so
            that the background tells neither the identity nor, alone, the camera.
        height: Image height in pixels (default 128).
        width: Image width in pixels (default 64).
        num_junk: Badly cropped boxes (pid -1) in bounding_box_test (default 150).
        num_distractors: Background-only boxes (pid 0000) in bounding_box_test (default 100).
        occlusion_prob: Probability that an object partly hides a person (default 0.1).
        jpeg_quality: Base JPEG quality, 1..95, varied per camera and image (default 90).
        detail_kinds: Local details a family may differ in (default all of DETAIL_KINDS).
        seed: Seed of the whole generation, >= 0 (default 0).
    """

    train_ids: int = field(default=750, metadata=_src("Market-1501 has 751 train ids"))
    test_ids: int = field(default=300, metadata=_src("fewer than Market's 750: cheap evaluation"))
    family_share: float = field(default=0.3, metadata=_src("most people have no near twin"))
    ids_per_family: int = field(default=3, metadata=_src("look-alike triplets"))
    images_per_id: int = field(default=12, metadata=_src("2 per camera for up to 6 cameras"))
    cameras_per_id: tuple[int, int] = field(default=(2, 6), metadata=_src("Market: 2-6 cams"))
    num_cameras: int = field(default=6, metadata=_src("as Market-1501"))
    scenes_per_camera: int = field(default=4, metadata=_src("backgrounds are no shortcut"))
    height: int = field(default=128, metadata=_src("half of the paper's 384x128 per side"))
    width: int = field(default=64, metadata=_src("half of the paper's 384x128 per side"))
    num_junk: int = field(default=150, metadata=_src("~4% of the test boxes"))
    num_distractors: int = field(default=100, metadata=_src("~3% of the test boxes"))
    occlusion_prob: float = field(default=0.1, metadata=_src("partial occlusion is common"))
    jpeg_quality: int = field(default=90, metadata=_src("mild compression artefacts"))
    detail_kinds: tuple[str, ...] = field(default=DETAIL_KINDS, metadata=_src("all kinds"))
    seed: int = field(default=0, metadata=_src("same seed, same bytes"))

    def __post_init__(self) -> None:
        # Lists arrive from JSON or callers; store tuples so the config stays hashable.
        object.__setattr__(self, "cameras_per_id", tuple(self.cameras_per_id))
        object.__setattr__(self, "detail_kinds", tuple(self.detail_kinds))
        self._validate()

    def _validate(self) -> None:
        ints = {
            "train_ids": 1,
            "test_ids": 1,
            "ids_per_family": 2,
            "images_per_id": 1,
            "num_cameras": 2,
            "scenes_per_camera": 1,
            "height": 32,
            "width": 16,
            "num_junk": 0,
            "num_distractors": 0,
            "jpeg_quality": 1,
            "seed": 0,
        }
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ConfigError(
                    f"SyntheticConfig.{name} must be an integer >= {low}, got {value!r}."
                )
        if self.num_cameras > MAX_CAMERAS:
            raise ConfigError(
                f"SyntheticConfig.num_cameras must be at most {MAX_CAMERAS} (Market-1501 "
                f"names cameras c1..c6), got {self.num_cameras}."
            )
        if self.jpeg_quality > 95:
            raise ConfigError(
                f"SyntheticConfig.jpeg_quality must be in 1..95, got {self.jpeg_quality}."
            )
        for name in ("occlusion_prob", "family_share"):
            prob = getattr(self, name)
            if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
                raise ConfigError(f"SyntheticConfig.{name} must be in [0, 1], got {prob!r}.")
        lo_hi = self.cameras_per_id
        if (
            len(lo_hi) != 2
            or not all(isinstance(c, (int, np.integer)) for c in lo_hi)
            or not 2 <= lo_hi[0] <= lo_hi[1] <= self.num_cameras
        ):
            raise ConfigError(
                "SyntheticConfig.cameras_per_id must be (min, max) with 2 <= min <= max <= "
                f"num_cameras={self.num_cameras}, got {lo_hi!r}."
            )
        if self.images_per_id < 2 * lo_hi[1]:
            raise ConfigError(
                f"SyntheticConfig.images_per_id must be >= 2 * cameras_per_id max = "
                f"{2 * lo_hi[1]} (a query and a gallery image per camera), got {self.images_per_id}."
            )
        self._validate_families()

    def _validate_families(self) -> None:
        unknown = [k for k in self.detail_kinds if k not in DETAIL_KINDS]
        if not self.detail_kinds or unknown:
            raise ConfigError(
                f"SyntheticConfig.detail_kinds must be a non-empty subset of {DETAIL_KINDS}, "
                f"got {self.detail_kinds!r}."
            )
        # Sleeves join families as short against long only (see _distinct_values).
        largest = max(2 if k == "sleeves" else len(detail_values(k)) for k in self.detail_kinds)
        if self.ids_per_family > largest:
            raise ConfigError(
                f"SyntheticConfig.ids_per_family must be at most {largest} (distinct values of "
                f"the details {self.detail_kinds}), got {self.ids_per_family}."
            )
        total = self.train_ids + self.test_ids
        if total > MAX_PID:
            raise ConfigError(
                f"SyntheticConfig gives {total} identities (train_ids + test_ids); "
                f"Market-1501 pids stop at {MAX_PID}."
            )

    def families_in(self, split: str) -> int:
        """Look-alike families in one split ("train" or "test"): the family share, rounded."""
        ids = self.train_ids if split == "train" else self.test_ids
        return min(ids // self.ids_per_family, round(ids * self.family_share / self.ids_per_family))

    @property
    def num_train_ids(self) -> int:
        """Identities in the training split."""
        return self.train_ids

    @property
    def num_test_ids(self) -> int:
        """Identities in the test split (query and gallery)."""
        return self.test_ids

    def with_seed(self, seed: int) -> SyntheticConfig:
        """The same config with another seed."""
        return dataclasses.replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError listing the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(
                f"Unknown SyntheticConfig field(s) {unknown}; valid fields: {', '.join(names)}."
            )
        return cls(**data)


SIZES: dict[str, SyntheticConfig] = {
    # About a second: 8 train ids and 8 test ids (two look-alike pairs per split), 6 images each.
    "smoke": SyntheticConfig(
        train_ids=8,
        test_ids=8,
        family_share=0.5,
        ids_per_family=2,
        images_per_id=6,
        cameras_per_id=(2, 3),
        num_junk=4,
        num_distractors=4,
    ),
    # Market-1501's number of training identities (751), 12 images each (Market: ~17).
    "default": SyntheticConfig(),
    # Market-1501's training split in shape, for speed work: 750 ids x 17 images = 12,750
    # crops at 128x64 (Market: 751 ids, 12,936).
    "market": SyntheticConfig(images_per_id=17),
}


# --------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PersonAttributes:
    """Everything that fixes one identity's look; proportions are fractions of body height.

    Args:
        skin, hair: RGB colours.
        hair_style: "short" or "long".
        head_size: Head height (0.12-0.135).
        shoulder_width, hip_width: Full widths (0.21-0.27, 0.16-0.2).
        leg_length: Hip to sole (0.44-0.49).
        upper, upper2: Upper garment colours; upper2 is used by the textures.
        upper_texture: One of UPPER_TEXTURES.
        stripe_period: Stripe period of the "stripes" texture (0.02-0.035).
        sleeves: One of SLEEVES.
        lower: Lower garment colour.
        lower_style: One of LOWER_STYLES.
        shoes: Shoe colour.
        hat, belt, logo, bag, backpack: Accessory colour, or None when absent.
        bag_side: +1 or -1, the hip the waist bag sits on.
    """

    skin: Colour
    hair: Colour
    hair_style: str
    head_size: float
    shoulder_width: float
    hip_width: float
    leg_length: float
    upper: Colour
    upper2: Colour
    upper_texture: str
    stripe_period: float
    sleeves: str
    lower: Colour
    lower_style: str
    shoes: Colour
    hat: Colour | None
    belt: Colour | None
    logo: Colour | None
    bag: Colour | None
    bag_side: int
    backpack: Colour | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (colours as lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonAttributes:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _jitter(colour: Colour, rng: np.random.Generator, amount: float) -> Colour:
    values = np.clip(np.asarray(colour) + rng.normal(0.0, amount, 3), 0, 255)
    return tuple(int(c) for c in np.rint(values))


def _pick_garment(rng: np.random.Generator, column: int, exclude: str = "") -> tuple[str, Colour]:
    names = [g[0] for g in _GARMENTS if g[0] != exclude]
    weights = np.array([g[column] for g in _GARMENTS if g[0] != exclude])
    index = rng.choice(len(names), p=weights / weights.sum())
    name = names[index]
    colour = next(g[1] for g in _GARMENTS if g[0] == name)
    return name, _jitter(colour, rng, 9.0)


def _maybe_accessory(rng: np.random.Generator, prob: float) -> Colour | None:
    colours = list(ACCESSORY_COLOURS.values())
    return colours[rng.integers(len(colours))] if rng.random() < prob else None


def sample_attributes(rng: np.random.Generator) -> PersonAttributes:
    """Draw one random person (the base look of a family).

    Args:
        rng: Random generator.

    Returns:
        PersonAttributes with garment colours from a street-clothes palette (jittered) and
        accessories present with ours probabilities (cap 12%, belt 25%, badge 15%, waist bag
        12%, backpack 20%).
    """
    upper_name, upper = _pick_garment(rng, 2)
    _, upper2 = _pick_garment(rng, 2, exclude=upper_name)
    _, lower = _pick_garment(rng, 3)
    colours = list(ACCESSORY_COLOURS.values())
    return PersonAttributes(
        skin=_jitter(_SKIN[rng.integers(len(_SKIN))], rng, 5.0),
        hair=_jitter(_HAIR[rng.integers(len(_HAIR))], rng, 5.0),
        hair_style="long" if rng.random() < 0.35 else "short",
        head_size=round(float(rng.uniform(0.12, 0.135)), 4),
        shoulder_width=round(float(rng.uniform(0.21, 0.27)), 4),
        hip_width=round(float(rng.uniform(0.16, 0.2)), 4),
        leg_length=round(float(rng.uniform(0.44, 0.49)), 4),
        upper=upper,
        upper2=upper2,
        upper_texture=UPPER_TEXTURES[rng.choice(4, p=[0.5, 0.2, 0.15, 0.15])],
        stripe_period=round(float(rng.uniform(0.02, 0.035)), 4),
        sleeves=SLEEVES[rng.integers(len(SLEEVES))],
        lower=lower,
        lower_style=LOWER_STYLES[rng.choice(3, p=[0.75, 0.15, 0.1])],
        shoes=colours[rng.integers(len(colours))],
        hat=_maybe_accessory(rng, 0.12),
        belt=_maybe_accessory(rng, 0.25),
        logo=_maybe_accessory(rng, 0.15),
        bag=_maybe_accessory(rng, 0.12),
        bag_side=1 if rng.random() < 0.5 else -1,
        backpack=_maybe_accessory(rng, 0.2),
    )


def sample_family(
    rng: np.random.Generator, size: int, kinds: tuple[str, ...] = DETAIL_KINDS
) -> tuple[str, list[PersonAttributes]]:
    """Draw a family: one base look (a cloned outfit), members that differ in one detail.

    Args:
        rng: Random generator.
        size: Number of members (at least 2).
        kinds: Detail kinds to choose from (default DETAIL_KINDS).

    Returns:
        ``(kind, members)``: the detail kind and ``size`` attribute sets, equal in every
        field but ``kind``, where they take values whose seen colours differ pairwise by at
        least MIN_DETAIL_CONTRAST (a base look that allows no such values is redrawn).
    """
    for _ in range(1000):
        base = sample_attributes(rng)
        for k in rng.permutation(len(kinds)):
            kind = kinds[int(k)]
            values = _distinct_values(rng, base, kind, size)
            if values is not None:
                return kind, [dataclasses.replace(base, **{kind: v}) for v in values]
    raise ConfigError(
        f"No detail kind in {kinds} has {size} values {MIN_DETAIL_CONTRAST:.0f} RGB levels apart."
    )


# --------------------------------------------------------------------------------------
# Cameras and poses
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One background a camera looks at.

    Args:
        wall, ground: Background colours above and below the horizon.
        horizon: Height of the horizon as a fraction of the box height.
        texture: Background texture, one of BACKGROUNDS.
        texture_period: Texture period in output pixels.
    """

    wall: Colour
    ground: Colour
    horizon: float
    texture: str
    texture_period: float


@dataclass(frozen=True)
class CameraStyle:
    """How one camera sees: colour cast, optics, sensor, backgrounds and viewing directions.

    Args:
        gain: Per-channel RGB gain (colour cast), around 1.
        brightness: Additive offset on the 0-255 scale.
        contrast: Contrast factor around mid-grey.
        blur: Gaussian blur sigma in output pixels (0 for none).
        low_res: Down-and-up sampling factor (1 for full resolution).
        noise: Sensor noise sigma on the 0-255 scale.
        jpeg_offset: Added to the config's JPEG quality.
        scenes: The backgrounds this camera shows; each image draws one.
        view_probs: Probability of each of VIEWS (front, back, left, right).
    """

    gain: tuple[float, float, float]
    brightness: float
    contrast: float
    blur: float
    low_res: float
    noise: float
    jpeg_offset: int
    scenes: tuple[Scene, ...]
    view_probs: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CameraStyle:
        """Inverse of :meth:`to_dict`."""
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        scenes = tuple(
            Scene(**{k: tuple(v) if isinstance(v, list) else v for k, v in sc.items()})
            for sc in data["scenes"]
        )
        return cls(**{**data, "scenes": scenes})


def neutral_camera() -> CameraStyle:
    """A camera with no cast, blur, noise or texture: for showing identities side by side."""
    return CameraStyle(
        gain=(1.0, 1.0, 1.0),
        brightness=0.0,
        contrast=1.0,
        blur=0.0,
        low_res=1.0,
        noise=0.0,
        jpeg_offset=0,
        scenes=(Scene((150, 150, 150), (120, 120, 120), 0.6, "plain", 8.0),),
        view_probs=(0.25, 0.25, 0.25, 0.25),
    )


def _round(x: float) -> float:
    return round(float(x), 4)


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one background: grey-ish wall and ground (mildly tinted), horizon and texture."""
    return Scene(
        wall=_jitter((rng.integers(70, 200),) * 3, rng, 18.0),
        ground=_jitter((rng.integers(70, 180),) * 3, rng, 14.0),
        horizon=_round(rng.uniform(0.3, 0.75)),
        texture=BACKGROUNDS[rng.integers(len(BACKGROUNDS))],
        texture_period=_round(rng.uniform(6, 16)),
    )


def sample_camera(
    rng: np.random.Generator, *, low_res: bool = False, scenes: int = 4
) -> CameraStyle:
    """Draw one camera's style.

    Args:
        rng: Random generator.
        low_res: Make it a low-resolution camera (like Market-1501's camera 6, which records
            720x576 frames against the others' 1920x1080, about 1.9x fewer rows): images are
            down-sampled by 1.8-2.2 and up-sampled back, with lower JPEG quality.
        scenes: Number of backgrounds the camera shows (default 4).

    Returns:
        CameraStyle.
    """
    views = 0.7 * rng.dirichlet(np.full(4, 1.2)) + 0.3 / 4  # every view possible everywhere
    return CameraStyle(
        gain=tuple(_round(g) for g in rng.uniform(0.9, 1.1, 3)),
        brightness=_round(rng.uniform(-25, 20)),
        contrast=_round(rng.uniform(0.8, 1.15)),
        blur=_round(rng.uniform(0.0, 0.8)),
        low_res=_round(rng.uniform(1.8, 2.2)) if low_res else 1.0,
        noise=_round(rng.uniform(1.5, 6.0)),
        jpeg_offset=-15 if low_res else int(rng.integers(-6, 3)),
        scenes=tuple(sample_scene(rng) for _ in range(scenes)),
        view_probs=tuple(_round(p) for p in views),
    )


@dataclass(frozen=True)
class Pose:
    """Where and how a person stands in one box.

    Args:
        view: One of VIEWS.
        phase: Walking phase in radians (legs and arms swing with sin(phase)).
        scale: Person height / box height (about 0.86; junk crops go far outside).
        dx: Horizontal offset of the person's centre, fraction of box width.
        dy: Vertical offset, fraction of box height.
        light: Per-image brightness factor.
        scene: Index of the camera's scene (background) behind the person.
    """

    view: str
    phase: float
    scale: float
    dx: float
    dy: float
    light: float
    scene: int = 0


def sample_pose(
    rng: np.random.Generator, camera: CameraStyle, *, view: str | None = None, crop: str = "person"
) -> Pose:
    """Draw a pose; the number of random draws never depends on the arguments.

    Args:
        rng: Random generator.
        camera: The camera (its view probabilities and number of scenes).
        view: Force a view (one of VIEWS); None draws it from the camera.
        crop: "person" for a well detected box (ours: detector jitter, scale 0.86 +- 0.05,
            vertical offset sd 4% of the height but never cutting off head or feet,
            horizontal sd 6% of the width), or a junk crop from JUNK_CROPS: "sliver" (person
            mostly outside the box), "zoom" (only part of the body) or "shifted" (only head
            or legs).

    Returns:
        Pose.
    """
    u = rng.random(7)
    z = rng.standard_normal(3)
    probs = np.asarray(camera.view_probs, dtype=float)
    drawn = VIEWS[min(int(np.searchsorted(np.cumsum(probs / probs.sum()), u[0])), 3)]
    if view is not None and view not in VIEWS:
        raise ConfigError(f"Unknown view {view!r}; expected one of {VIEWS}.")
    scale = float(np.clip(0.86 + 0.05 * z[0], 0.74, 0.96))
    dx = float(np.clip(0.06 * z[1], -0.15, 0.15))
    room = (1.0 - scale) / 2  # the whole person stays inside the box
    dy = float(np.clip(0.04 * z[2], -room, room))
    sign = 1.0 if u[4] < 0.5 else -1.0
    if crop == "sliver":
        dx = sign * (0.5 + 0.25 * u[5])
    elif crop == "zoom":
        scale = 1.7 + 0.9 * u[5]
        dy = (u[4] - 0.5) * (scale - 1.0)
    elif crop == "shifted":
        dy = sign * (0.38 + 0.2 * u[5])
    elif crop != "person":
        raise ConfigError(f"Unknown crop {crop!r}; expected 'person' or one of {JUNK_CROPS}.")
    return Pose(
        view=view or drawn,
        phase=float(2 * np.pi * u[1]),
        scale=scale,
        dx=dx,
        dy=dy,
        light=float(0.88 + 0.24 * u[2]),
        scene=min(int(u[6] * len(camera.scenes)), len(camera.scenes) - 1),
    )


# --------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------


def _ellipse(
    u: np.ndarray, v: np.ndarray, uc: float, vc: float, ru: float, rv: float
) -> np.ndarray:
    return ((u - uc) / ru) ** 2 + ((v - vc) / rv) ** 2 <= 1.0


def _rect(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return (u >= u0) & (u < u1) & (v >= v0) & (v < v1)


def _capsule(
    u: np.ndarray,
    v: np.ndarray,
    a: tuple[float, float],
    b: tuple[float, float],
    r0: float,
    r1: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask of a segment a->b thickened by a radius going r0->r1, and the position t along it."""
    du, dv = b[0] - a[0], b[1] - a[1]
    t = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    d2 = (u - a[0] - t * du) ** 2 + (v - a[1] - t * dv) ** 2
    r = r0 + (r1 - r0) * t
    return d2 <= r * r, t


class _Layer:
    """A person layer painted back to front (painter's algorithm)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.rgb = np.zeros((*shape, 3), np.float32)
        self.alpha = np.zeros(shape, bool)
        self.labels = np.zeros(shape, np.uint8)  # MASK_LABELS indices

    def paint(self, mask: np.ndarray, colour: Any, label: int = 1) -> None:
        if isinstance(colour, np.ndarray) and colour.ndim == 3:
            self.rgb[mask] = colour[mask]
        else:
            self.rgb[mask] = colour
        self.alpha |= mask
        self.labels[mask] = label

    def label(self, mask: np.ndarray, label: int) -> None:
        """Mark the painted part of ``mask`` as one detail region."""
        self.labels[mask & self.alpha] = label


_LABEL = {name: i for i, name in enumerate(MASK_LABELS)}
# The README's summary of the design (the module docstring has the long form).
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
_SLEEVE_END = {"short": 0.35, "three_quarter": 0.68, "long": 0.92}


def _draw_person(
    a: PersonAttributes, pose: Pose, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a person on a transparent canvas of ``shape`` (supersampled).

    Body coordinates: u runs from the top of the head (0) to the soles (1), v is the
    horizontal offset from the body axis, both in units of body height.

    Returns:
        ``(rgb, alpha, labels)``: float (H, W, 3) colours, bool (H, W) coverage and uint8
        (H, W) MASK_LABELS indices.
    """
    h, w = shape
    height = pose.scale * h
    y0 = (h - height) / 2 + pose.dy * h
    cx = w / 2 + pose.dx * w
    u = ((np.arange(h, dtype=np.float32) + 0.5 - y0) / height)[:, None]
    v = ((np.arange(w, dtype=np.float32) + 0.5 - cx) / height)[None, :]
    side = pose.view in ("left", "right")
    if pose.view == "left":
        v = -v  # the side view faces +v; "left" is its mirror image
    layer = _Layer(shape)
    g = _Geometry.of(a, pose)
    _draw_lower_body(layer, a, g, u, v, side)
    _draw_torso(layer, a, g, u, v, pose.view)
    _draw_arms(layer, a, g, u, v, side, near=True)
    _draw_head(layer, a, g, u, v, pose.view)
    _draw_waist_bag(layer, a, g, u, v, pose.view)
    # Cylindrical shading (darker at the body's edges) and a little top light.
    shade = np.clip(1.0 - 0.45 * (v / (a.shoulder_width * 0.75)) ** 2, 0.65, 1.0)
    layer.rgb *= (shade * (1.04 - 0.08 * np.clip(u, 0, 1)))[..., None]
    return layer.rgb, layer.alpha, layer.labels


@dataclass(frozen=True)
class _Geometry:
    """Joint positions derived from attributes and pose (units of body height)."""

    hs: float  # head height
    u_s: float  # shoulder line
    u_h: float  # hip joints
    u_w: float  # waist
    torso_w: float  # width factor of the torso in this view
    swing: float  # signed swing amount, sin(phase)

    @classmethod
    def of(cls, a: PersonAttributes, pose: Pose) -> _Geometry:
        return cls(
            hs=a.head_size,
            u_s=a.head_size + 0.03,
            u_h=1.0 - a.leg_length,
            u_w=1.0 - a.leg_length - 0.05,
            torso_w=0.62 if pose.view in ("left", "right") else 1.0,
            swing=float(np.sin(pose.phase)),
        )

    def torso_half_width(self, a: PersonAttributes, u: np.ndarray) -> np.ndarray:
        knots = [self.u_s, self.u_s + 0.035, self.u_w, self.u_h + 0.03]
        widths = [
            a.shoulder_width * 0.35,
            a.shoulder_width / 2,
            a.hip_width * 0.47,
            a.hip_width / 2,
        ]
        return np.interp(u, knots, widths).astype(np.float32) * self.torso_w


def _upper_colour(a: PersonAttributes, g: _Geometry, u: np.ndarray, v: np.ndarray) -> Any:
    shape = (u.shape[0], v.shape[1])
    if a.upper_texture == "stripes":
        stripe = np.broadcast_to(np.floor((u - g.u_s) / a.stripe_period) % 2 == 0, shape)
        return np.where(stripe[..., None], np.float32(a.upper), np.float32(a.upper2))
    if a.upper_texture == "two_tone":
        top = np.broadcast_to(u < g.u_s + 0.55 * (g.u_w - g.u_s), shape)
        return np.where(top[..., None], np.float32(a.upper), np.float32(a.upper2))
    return a.upper


def _draw_lower_body(
    layer: _Layer, a: PersonAttributes, g: _Geometry, u: np.ndarray, v: np.ndarray, side: bool
) -> None:
    if side:
        _draw_arms(layer, a, g, u, v, side, near=False)
        feet = (0.13 * g.swing, -0.13 * g.swing)
        hips = (0.0, 0.0)
    else:
        feet = (-a.hip_width * 0.28 - 0.008 * g.swing, a.hip_width * 0.28 - 0.008 * g.swing)
        hips = (-a.hip_width * 0.25, a.hip_width * 0.25)
    covered = {"trousers": 0.95, "shorts": 0.38, "skirt": 0.0}[a.lower_style]
    for i, (hip_v, foot_v) in enumerate(zip(hips, feet)):
        leg, t = _capsule(u, v, (g.u_h, hip_v), (0.975, foot_v), 0.036, 0.024)
        dim = 0.85 if side and i == 1 else 1.0  # the far leg is in shadow
        layer.paint(leg & (t > covered), np.float32(a.skin) * dim)
        layer.paint(leg & (t <= covered), np.float32(a.lower) * dim)
        forward = 0.016 if side else 0.0
        # A shoe with its ankle is about 6% of body height (7x8 pixels at 128 px): large
        # enough to survive the low-resolution camera.
        shoe = _ellipse(u, v, 0.97, foot_v + forward, 0.03, 0.052 if side else 0.038)
        layer.paint(shoe, np.float32(a.shoes) * dim, label=_LABEL["shoes"])
    hw = a.hip_width / 2 * g.torso_w
    if a.lower_style == "skirt":
        width = np.interp(u, [g.u_w, g.u_h + 0.17], [hw, hw + 0.04]).astype(np.float32)
        layer.paint((u >= g.u_w) & (u < g.u_h + 0.17) & (np.abs(v) <= width), a.lower)
    else:
        layer.paint(_rect(u, v, g.u_w, g.u_h + 0.03, -hw, hw), a.lower)


def _draw_torso(
    layer: _Layer, a: PersonAttributes, g: _Geometry, u: np.ndarray, v: np.ndarray, view: str
) -> None:
    half = g.torso_half_width(a, u)
    torso = (u >= g.u_s) & (u < g.u_w + 0.02) & (np.abs(v) <= half)
    layer.paint(torso, _upper_colour(a, g, u, v))
    if a.upper_texture == "print" and view == "front":
        layer.paint(torso & _rect(u, v, g.u_s + 0.07, g.u_s + 0.17, -0.045, 0.045), a.upper2)
    # A wide belt, about 4.5 pixels tall at 128 px (2 at the low-resolution camera's rate).
    band = _rect(u, v, g.u_w - 0.02, g.u_w + 0.02, -1, 1) & (np.abs(v) <= half + 0.003)
    if a.belt is not None:
        layer.paint(band, a.belt)
    layer.label(band, _LABEL["belt"])
    if a.logo is not None and view == "front":
        # A chest badge of about 4x4 pixels at 128 px: small and local on purpose.
        layer.paint(_rect(u, v, g.u_s + 0.05, g.u_s + 0.085, 0.025, 0.06), a.logo)
    if a.backpack is not None:
        sw = a.shoulder_width
        if view == "back":
            layer.paint(_rect(u, v, g.u_s + 0.02, g.u_s + 0.24, -sw * 0.36, sw * 0.36), a.backpack)
        elif view == "front":
            for centre in (-sw * 0.27, sw * 0.27):
                layer.paint(
                    _rect(u, v, g.u_s, g.u_s + 0.2, centre - 0.01, centre + 0.01), a.backpack
                )
        else:
            edge = float(sw / 2 * g.torso_w)
            layer.paint(
                _rect(u, v, g.u_s + 0.02, g.u_s + 0.24, -edge - 0.07, -edge + 0.01), a.backpack
            )


def _draw_arms(
    layer: _Layer,
    a: PersonAttributes,
    g: _Geometry,
    u: np.ndarray,
    v: np.ndarray,
    side: bool,
    near: bool,
) -> None:
    sleeve_end = _SLEEVE_END[a.sleeves]
    length = 0.32
    if side:
        angle = (0.4 if near else -0.4) * g.swing
        arms = [
            ((g.u_s + 0.02, 0.0), (g.u_s + 0.02 + length * np.cos(angle), length * np.sin(angle)))
        ]
        dim = 1.0 if near else 0.85
    else:
        off = a.shoulder_width / 2 - 0.015
        arms = [
            ((g.u_s + 0.02, s * off), (g.u_s + 0.02 + length, s * (off + 0.02))) for s in (-1, 1)
        ]
        dim = 1.0
    for start, end in arms:
        arm, t = _capsule(u, v, start, end, 0.026, 0.02)
        layer.paint(arm & (t <= sleeve_end), np.float32(a.upper) * dim, label=_LABEL["sleeves"])
        layer.paint(arm & (t > sleeve_end), np.float32(a.skin) * dim, label=_LABEL["sleeves"])


def _draw_head(
    layer: _Layer, a: PersonAttributes, g: _Geometry, u: np.ndarray, v: np.ndarray, view: str
) -> None:
    hs = g.hs
    side = view in ("left", "right")
    rv = hs * (0.43 if side else 0.4)
    vc = 0.01 if side else 0.0
    layer.paint(_rect(u, v, hs * 0.85, g.u_s + 0.01, -0.022, 0.022), a.skin)  # neck
    head = _ellipse(u, v, hs / 2, vc, hs / 2, rv)
    layer.paint(head, a.skin)
    big = _ellipse(u, v, hs / 2, vc, hs / 2 * 1.06, rv * 1.08)
    if view == "back":
        hair = big & (u < hs * 0.88)
    elif side:
        hair = big & ((u < hs * 0.3) | (v < -0.01))
    else:
        hair = big & (u < hs * 0.28)
    if a.hair_style == "long":
        if view == "back":
            hair |= _rect(u, v, hs * 0.5, g.u_s + 0.09, -rv * 1.05, rv * 1.05)
        elif side:
            hair |= _rect(u, v, hs * 0.5, g.u_s + 0.08, -rv * 1.05, -rv * 0.1)
        else:
            hair |= big & (np.abs(v) > rv * 0.72)
            hair |= _rect(u, v, hs * 0.5, g.u_s + 0.06, -rv * 1.1, -rv * 0.6)
            hair |= _rect(u, v, hs * 0.5, g.u_s + 0.06, rv * 0.6, rv * 1.1)
    layer.paint(hair, a.hair)
    # The crown is the hat's region whether a cap is worn (cap colour) or not (hair, brow).
    cap = _ellipse(u, v, hs / 2, vc, hs / 2 * 1.1, rv * 1.1) & (u < hs * 0.4)
    if a.hat is not None:
        if side:
            brim = _rect(u, v, hs * 0.33, hs * 0.42, 0.0, rv * 1.6)
        else:
            brim = _rect(u, v, hs * 0.33, hs * 0.42, -rv * 1.12, rv * 1.12)
        layer.paint(cap | brim, a.hat)
    layer.label(cap, _LABEL["hat"])


def _draw_waist_bag(
    layer: _Layer, a: PersonAttributes, g: _Geometry, u: np.ndarray, v: np.ndarray, view: str
) -> None:
    if a.bag is None:
        return
    # A small waist bag, about 7x6 pixels at 128 px, on one hip; from the side it is seen
    # only when that hip faces the camera.
    if view == "front":
        centre = a.bag_side * (a.hip_width / 2 + 0.005)
    elif view == "back":
        centre = -a.bag_side * (a.hip_width / 2 + 0.005)
    elif (view == "right") == (a.bag_side > 0):
        centre = -0.01
    else:
        return
    layer.paint(_rect(u, v, g.u_h - 0.035, g.u_h + 0.03, centre - 0.028, centre + 0.028), a.bag)


def _downsample2(x: np.ndarray) -> np.ndarray:
    """Average 2x2 blocks (slicing is several times faster than reshape-and-mean here)."""
    return (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) * np.float32(0.25)


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, 3) float image with edge padding."""
    if sigma < 0.05:
        return img
    radius = max(1, int(np.ceil(2.5 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    h, w = img.shape[:2]
    pad = np.pad(img, ((radius, radius), (0, 0), (0, 0)), mode="edge")
    out = sum(k * pad[i : i + h] for i, k in enumerate(taps))
    pad = np.pad(out, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    return sum(k * pad[:, i : i + w] for i, k in enumerate(taps))


def _resize(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize of an (H, W, C) float image (half-pixel centres, edge clamped)."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), (pos - lo).astype(np.float32)

    y0, y1, wy = axis(img.shape[0], out_h)
    x0, x1, wx = axis(img.shape[1], out_w)
    rows = img[y0] * (1 - wy)[:, None, None] + img[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def _background(scene: Scene, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Wall above a (jittered) horizon, ground below, with the scene's texture."""
    camera = scene
    u = rng.random(3)
    speckle = rng.random((h // 4 + 1, w // 4 + 1, 1)).astype(np.float32)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    horizon = (camera.horizon + 0.08 * (u[0] - 0.5)) * h
    below = np.broadcast_to(y >= horizon, (h, w))
    img = np.where(below[..., None], np.float32(camera.ground), np.float32(camera.wall))
    p = camera.texture_period
    ox, oy = u[1] * p, u[2] * p
    if camera.texture == "tiles":
        lines = ((np.mod(x + ox, p) < 1.0) | (np.mod(y + oy, p * 0.6) < 1.0)) & below
        img = img * np.where(lines, 0.8, 1.0)[..., None]
    elif camera.texture == "bricks":
        course = np.floor((y + oy) / (p / 2))
        joint = (np.mod(y + oy, p / 2) < 1.0) | (np.mod(x + ox + (course % 2) * p / 2, p) < 1.0)
        img = img * np.where(joint & ~below, 0.82, 1.0)[..., None]
    elif camera.texture == "speckle":
        img = img * (0.9 + 0.2 * np.repeat(np.repeat(speckle, 4, 0), 4, 1)[:h, :w])
    # Soft vertical light fall-off so backgrounds are not flat.
    return (img * (1.05 - 0.1 * y / h)[..., None]).astype(np.float32)


def _occlude(
    img: np.ndarray, rng: np.random.Generator, prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """Maybe hide part of the box behind a bench/car (bottom), a pole or a passer-by.

    Returns the image and the bool (H, W) mask of the occluder (all False for none).
    """
    u = rng.random(6)
    h, w = img.shape[:2]
    hidden = np.zeros((h, w), bool)
    if u[0] >= prob:
        return img, hidden
    colour = np.float32(_GARMENTS[int(u[2] * len(_GARMENTS))][1]) * (0.6 + 0.4 * u[3])
    kind = int(u[1] * 3)
    out = img.copy()
    if kind == 0:  # bench or car: the bottom 15-35%
        hidden[int(h * (0.65 + 0.2 * u[4])) :] = True
    elif kind == 1:  # a pole, 3-7 px wide
        x0 = int(u[4] * (w - 7))
        hidden[:, x0 : x0 + 3 + int(4 * u[5])] = True
        colour = colour * 0.7
    else:  # a passer-by at one edge, 20-35% of the width
        width = int(w * (0.2 + 0.15 * u[5]))
        cols = slice(0, width) if u[4] < 0.5 else slice(w - width, w)
        hidden[int(h * 0.1) :, cols] = True
    out[hidden] = colour
    return out, hidden


def _apply_camera(
    img: np.ndarray, camera: CameraStyle, pose: Pose, rng: np.random.Generator
) -> np.ndarray:
    """Colour cast, contrast, optics, resolution and sensor noise; returns uint8 (H, W, 3)."""
    noise = rng.standard_normal(img.shape).astype(np.float32)
    img = img * pose.light
    img = (img - 128.0) * camera.contrast + 128.0 + camera.brightness
    img = img * np.float32(camera.gain)
    img = _gaussian_blur(img, camera.blur)
    if camera.low_res > 1.0:
        h, w = img.shape[:2]
        small = _resize(
            _gaussian_blur(img, camera.low_res / 2),
            round(h / camera.low_res),
            round(w / camera.low_res),
        )
        img = _resize(small, h, w)
    img = img + camera.noise * noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_box(
    attributes: PersonAttributes | None,
    camera: CameraStyle,
    pose: Pose,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = (128, 64),
    occlusion_prob: float = 0.0,
) -> np.ndarray:
    """Render one bounding box: background, the person (if any) in ``pose``, camera effects.

    The random draws never depend on the attributes, so two identities rendered with
    generators in the same state get the same pose, background and noise.

    Args:
        attributes: The person, or None for a background-only box.
        camera: Camera style.
        pose: Where and how the person stands.
        rng: Random generator (background phase, occlusion, sensor noise).
        size: ``(height, width)`` in pixels (default (128, 64)).
        occlusion_prob: Probability of a partial occluder (default 0).

    Returns:
        uint8 array of shape (height, width, 3).
    """
    return _render(attributes, camera, pose, rng, size, occlusion_prob)[0]


def _render(
    attributes: PersonAttributes | None,
    camera: CameraStyle,
    pose: Pose,
    rng: np.random.Generator,
    size: tuple[int, int],
    occlusion_prob: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_box` and the box's uint8 MASK_LABELS map (0 where no person shows)."""
    h, w = size
    img = _background(camera.scenes[pose.scene], h, w, rng)
    labels = np.zeros((h, w), np.uint8)
    if attributes is not None:
        rgb, alpha, big = _draw_person(attributes, pose, (2 * h, 2 * w))
        alpha_small = _downsample2(alpha.astype(np.float32))[..., None]
        img = img * (1.0 - alpha_small) + _downsample2(rgb * alpha[..., None])
        # A pixel is labelled when at least half of its 2x2 samples show the person; its
        # label is the most specific one among them (a detail region over plain "person").
        labels = np.where(alpha_small[..., 0] >= 0.5, _max_pool2(big), 0).astype(np.uint8)
    img, hidden = _occlude(img, rng, occlusion_prob)
    labels[hidden] = 0
    return _apply_camera(img, camera, pose, rng), labels


def _max_pool2(x: np.ndarray) -> np.ndarray:
    return np.maximum(
        np.maximum(x[0::2, 0::2], x[1::2, 0::2]), np.maximum(x[0::2, 1::2], x[1::2, 1::2])
    )


def render_person(
    attributes: PersonAttributes,
    camera: CameraStyle | None = None,
    rng: np.random.Generator | int = 0,
    *,
    size: tuple[int, int] = (128, 64),
    view: str | None = None,
    occlusion_prob: float = 0.0,
) -> np.ndarray:
    """Render a person as a camera would see them (a random pose unless ``view`` is given).

    Args:
        attributes: The person.
        camera: Camera style; None for :func:`neutral_camera`.
        rng: Random generator or an integer seed (default 0). The same seed gives the same
            pose, background and noise for any attributes: handy to show a family side by side.
        size: ``(height, width)`` in pixels (default (128, 64)).
        view: Force one of VIEWS; None draws it from the camera.
        occlusion_prob: Probability of a partial occluder (default 0).

    Returns:
        uint8 array of shape (height, width, 3).
    """
    camera = camera or neutral_camera()
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    pose = sample_pose(rng, camera, view=view)
    return render_box(attributes, camera, pose, rng, size=size, occlusion_prob=occlusion_prob)


# --------------------------------------------------------------------------------------
# Planning the dataset
# --------------------------------------------------------------------------------------

# Streams of np.random.default_rng([seed, stream, index]): one per independent purpose, so
# that adding images never changes the ones drawn before.
_PLAN_STREAM, _IMAGE_STREAM, _JUNK_PERSON_STREAM = 1, 2, 3


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
    prefix = "-1" if pid == -1 else f"{pid:04d}"
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
    info["counts"]["junk"] = sum(it.pid == -1 for it in items)
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
            folder = (
                "bounding_box_train"
                if split == "train"
                else ("query" if j == query else "bounding_box_test")
            )
            items.append(_Item(folder, _file_name(pid, cam, frame), pid, cam, view, "person"))
    return items


def _extra_items(
    config: SyntheticConfig, rng: np.random.Generator, frames: _Frames, popularity: np.ndarray
) -> list[_Item]:
    """Junk (pid -1, bad crops of people) and distractors (pid 0, background-only boxes)."""
    items = []
    for pid, count in ((-1, config.num_junk), (0, config.num_distractors)):
        for _ in range(count):
            cam = int(rng.choice(config.num_cameras, p=popularity))
            crop = JUNK_CROPS[rng.integers(len(JUNK_CROPS))] if pid == -1 else "background"
            name = _file_name(pid, cam, frames.tracklet(cam, 1)[0])
            items.append(_Item("bounding_box_test", name, pid, cam, None, crop))
    return items


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


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
        if item.pid == -1:  # junk: a bad crop of some passer-by
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

    The renderer knows where the person is: every image is drawn again from the plan its
    README records (same seed, same draws), and this returns, per image, a uint8 (H, W) map
    of MASK_LABELS indices: 0 background or occluder, 1 the person, 2-5 the regions of the
    family details (shoes, hat, belt, sleeves), labelled whether the detail is worn or not.
    ``mask > 0`` is the person mask (e.g. for the share of a feature map's mass on the person).

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

    For every query of a family member, the candidates are the gallery images of its family
    that the Market-1501 protocol keeps (not the same identity in the same camera). Each
    image is described by the mean colour of the written JPEG's pixels inside the family's
    detail region (from :func:`render_masks`), standardised per channel by the mean and
    standard deviation of the rest of the person (family members share that outfit). The
    camera model's colour changes (light, contrast, brightness, per-channel gain) are affine
    per channel, which this cancels; blur, noise, JPEG and the low resolution are left for
    the detail to survive. The nearest candidate is the oracle's rank-1. A query whose detail region is hidden (occluded, or too small) counts
    as a miss. High rank-1 says the detail survives every camera; it measures the data, not
    any model.

    Args:
        root: A dataset written by :func:`generate_synthetic`.

    Returns:
        ``{"rank1", "queries", "hidden", "per_kind": {kind: rank1}, "per_camera": {cam: rank1}}``
        over the family queries (cameras 1-based).
    """
    root = Path(root)
    info = read_synthetic_info(root)
    family_of = {p: f for f in info["families"] for p in f["pids"] if f["split"] == "test"}
    records = []  # (folder, pid, camera 1-based, relative name)
    for folder in ("query", "bounding_box_test"):
        for path in sorted((root / folder).glob("*.jpg")):
            pid = int(path.name.split("_")[0])
            if pid in family_of:
                records.append(
                    (folder, pid, int(path.name.split("_")[1][1]), f"{folder}/{path.name}")
                )
    masks = render_masks(root, [r[3] for r in records])
    feats: dict[str, np.ndarray | None] = {}
    for folder, pid, cam, name in records:
        image = np.asarray(Image.open(root / name), dtype=np.float64)
        code = MASK_LABELS.index(family_of[pid]["detail"])
        region, rest = masks[name] == code, (masks[name] > 0) & (masks[name] != code)
        if region.sum() < 2 or rest.sum() < 10:
            feats[name] = None
            continue
        others = image[rest]
        feats[name] = (image[region].mean(0) - others.mean(0)) / np.maximum(others.std(0), 1.0)
    hits, hidden = [], 0
    per_kind: dict[str, list[bool]] = {}
    per_camera: dict[int, list[bool]] = {}
    gallery = [r for r in records if r[0] == "bounding_box_test"]
    for _, pid, cam, name in (r for r in records if r[0] == "query"):
        fam, query = family_of[pid], feats[name]
        cands = [
            (float(np.linalg.norm(feats[g] - query)), gpid)
            for _, gpid, gcam, g in gallery
            if query is not None
            and family_of[gpid] is fam
            and not (gpid == pid and gcam == cam)
            and feats[g] is not None
        ]
        hit = bool(cands) and min(cands)[1] == pid
        hidden += feats[name] is None
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


def _is_synthetic(root: Path) -> bool:
    try:
        read_synthetic_info(root)
    except DatasetError:
        return False
    return True


def _check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise DatasetError(
            f"{root} exists and is not a folder; expected a folder for the synthetic dataset."
        )
    if root.is_dir() and any(root.iterdir()) and not _is_synthetic(root):
        raise DatasetError(
            f"{root} is not empty and holds no canlib synthetic dataset; choose an empty or new folder."
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
    bar = tqdm(total=len(items), desc="synthetic", unit="img", disable=not progress)
    if workers <= 1:
        for chunk in chunks:
            bar.update(_render_chunk(folder, [items[i] for i in chunk], chunk, info, config))
    else:
        # fork: the workers inherit the module; each chunk carries its own items.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            jobs = [
                pool.submit(_render_chunk, folder, [items[i] for i in chunk], chunk, info, config)
                for chunk in chunks
            ]
            for job in as_completed(jobs):
                bar.update(job.result())
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
        try:
            info = read_synthetic_info(root)
        except DatasetError:
            info = {}
        if info.get("format_version") == FORMAT_VERSION and info.get("config") == config.to_dict():
            return root
        logger.warning("%s holds another synthetic dataset; regenerating it for %s", root, config)
    return generate_synthetic(root, config, progress=progress)
