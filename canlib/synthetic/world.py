"""The synthetic world: identities and look-alike families, scenes, cameras and poses.

Everything here is drawn, nothing is drawn on pixels (see render.py); the design is in
canlib.synthetic's docstring.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from canlib.errors import ConfigError

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
_ACCESSORIES = tuple(ACCESSORY_COLOURS.values())

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
        "short" and "long" for "sleeves" (three-quarter sleeves differ from long ones only at
        the wrist, so they join no family), accessory colours for "shoes", and None (absent)
        plus accessory colours for "hat" and "belt".
    """
    if kind not in DETAIL_KINDS:
        raise ConfigError(f"Unknown detail kind {kind!r}; expected one of {DETAIL_KINDS}.")
    if kind == "sleeves":
        return ["short", "long"]
    return list(_ACCESSORIES) if kind == "shoes" else [None, *_ACCESSORIES]


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


def _lists(data: dict[str, Any]) -> dict[str, Any]:
    """A dataclass's fields as JSON-ready values: tuples become lists (one level deep)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_lists`: lists become tuples, so the dataclass stays hashable."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


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
                f"{2 * lo_hi[1]} (a query and a gallery image per camera), "
                f"got {self.images_per_id}."
            )
        self._validate_families()

    def _validate_families(self) -> None:
        unknown = [k for k in self.detail_kinds if k not in DETAIL_KINDS]
        if not self.detail_kinds or unknown:
            raise ConfigError(
                f"SyntheticConfig.detail_kinds must be a non-empty subset of {DETAIL_KINDS}, "
                f"got {self.detail_kinds!r}."
            )
        largest = max(len(detail_values(k)) for k in self.detail_kinds)
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

    def with_seed(self, seed: int) -> SyntheticConfig:
        """The same config with another seed."""
        return dataclasses.replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return _lists(dataclasses.asdict(self))

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
        return _lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PersonAttributes:
        """Inverse of :meth:`to_dict`."""
        return cls(**_tuples(data))


def _round(x: float) -> float:
    return round(float(x), 4)


def _jitter(colour: Colour, rng: np.random.Generator, amount: float) -> Colour:
    values = np.clip(np.asarray(colour) + rng.normal(0.0, amount, 3), 0, 255)
    return tuple(int(c) for c in np.rint(values))


def _pick_garment(rng: np.random.Generator, column: int, exclude: str = "") -> tuple[str, Colour]:
    """A garment colour (jittered) drawn by the weights in ``_GARMENTS[:][column]``."""
    garments = [g for g in _GARMENTS if g[0] != exclude]
    weights = np.array([g[column] for g in garments])
    name, colour = garments[rng.choice(len(garments), p=weights / weights.sum())][:2]
    return name, _jitter(colour, rng, 9.0)


def _maybe_accessory(rng: np.random.Generator, prob: float) -> Colour | None:
    return _ACCESSORIES[rng.integers(len(_ACCESSORIES))] if rng.random() < prob else None


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
    return PersonAttributes(
        skin=_jitter(_SKIN[rng.integers(len(_SKIN))], rng, 5.0),
        hair=_jitter(_HAIR[rng.integers(len(_HAIR))], rng, 5.0),
        hair_style="long" if rng.random() < 0.35 else "short",
        head_size=_round(rng.uniform(0.12, 0.135)),
        shoulder_width=_round(rng.uniform(0.21, 0.27)),
        hip_width=_round(rng.uniform(0.16, 0.2)),
        leg_length=_round(rng.uniform(0.44, 0.49)),
        upper=upper,
        upper2=upper2,
        upper_texture=UPPER_TEXTURES[rng.choice(4, p=[0.5, 0.2, 0.15, 0.15])],
        stripe_period=_round(rng.uniform(0.02, 0.035)),
        sleeves=SLEEVES[rng.integers(len(SLEEVES))],
        lower=lower,
        lower_style=LOWER_STYLES[rng.choice(3, p=[0.75, 0.15, 0.1])],
        shoes=_ACCESSORIES[rng.integers(len(_ACCESSORIES))],
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
        scenes = tuple(Scene(**_tuples(scene)) for scene in data["scenes"])
        return cls(**{**_tuples(data), "scenes": scenes})


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
