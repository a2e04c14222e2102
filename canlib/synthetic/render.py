"""Drawing a person, a background and a camera's optics on a 2x supersampled canvas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from canlib.synthetic.world import (
    _GARMENTS,
    MASK_LABELS,
    CameraStyle,
    PersonAttributes,
    Pose,
    Scene,
    neutral_camera,
    sample_pose,
)


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
        self.rgb[mask] = colour[mask] if np.ndim(colour) == 3 else colour  # an image or one RGB
        self.alpha |= mask
        self.labels[mask] = label

    def label(self, mask: np.ndarray, label: int) -> None:
        """Mark the painted part of ``mask`` as one detail region."""
        self.labels[mask & self.alpha] = label


_LABEL = {name: i for i, name in enumerate(MASK_LABELS)}
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
    u = rng.random(3)
    speckle = rng.random((h // 4 + 1, w // 4 + 1, 1)).astype(np.float32)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    horizon = (scene.horizon + 0.08 * (u[0] - 0.5)) * h
    below = np.broadcast_to(y >= horizon, (h, w))
    img = np.where(below[..., None], np.float32(scene.ground), np.float32(scene.wall))
    p = scene.texture_period
    ox, oy = u[1] * p, u[2] * p
    if scene.texture == "tiles":
        lines = ((np.mod(x + ox, p) < 1.0) | (np.mod(y + oy, p * 0.6) < 1.0)) & below
        img = img * np.where(lines, 0.8, 1.0)[..., None]
    elif scene.texture == "bricks":
        course = np.floor((y + oy) / (p / 2))
        joint = (np.mod(y + oy, p / 2) < 1.0) | (np.mod(x + ox + (course % 2) * p / 2, p) < 1.0)
        img = img * np.where(joint & ~below, 0.82, 1.0)[..., None]
    elif scene.texture == "speckle":
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


def _render(
    attributes: PersonAttributes | None,
    camera: CameraStyle,
    pose: Pose,
    rng: np.random.Generator,
    size: tuple[int, int],
    occlusion_prob: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one bounding box: background, the person (None: none) in ``pose``, camera effects.

    ``rng`` draws the background phase, occlusion and sensor noise; the draws never depend on
    the attributes, so two identities rendered with generators in the same state get the same
    pose, background and noise. Returns the uint8 (height, width, 3) image and its uint8
    MASK_LABELS map (0 where no person shows).
    """
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
    """Maximum over 2x2 blocks."""
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).max(axis=(1, 3))


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
    return _render(attributes, camera, pose, rng, size, occlusion_prob)[0]
