"""Synthetic "paper-doll" people with ATR-18 labels: the kit's embedded, download-free dataset.

Each image shows one standing person drawn from simple shapes (OpenCV polygons, ellipses and thick lines
on the label map first, then colours and textures painted through the map) over a cluttered background.

What varies, per image: position, scale and build of the person; arm and leg angles (pose); the outfit
(dress, skirt + top, or pants/shorts + top; sleeve length); optional hat, sunglasses, belt, scarf and bag
(carried in the person's left hand, right hand, or across the front); long or short hair; skin, hair and
garment colours; garment textures (plain, stripes, checks, dots, noise); the background (gradient plus
3–12 distractor shapes, some in garment-like colours); lighting and sensor noise.

**Left/right convention.** The person faces the viewer, so the person's *left* arm, leg and shoe are on
the *image right* (larger x), exactly as in ATR's annotations. ``left-arm`` (14), ``left-leg`` (12) and
``left-shoe`` (9) lie right of the body's centre line; a horizontal mirror must swap each pair
(:attr:`~qparse_lite.labels.LabelSet.mirror_lut`).

Determinism: image ``i`` depends only on ``(seed, i)`` (its generator is
``numpy.random.default_rng([seed, i])``), so any index can be produced alone and the same seed gives the
same bytes. Split: the first 80 % of indices train, the next 10 % val, the last 10 % test.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from qparse_lite.data.base import Dataset, Sample
from qparse_lite.errors import QparseError
from qparse_lite.labels import ATR18

__all__ = ["SyntheticPeople", "GENERATOR_VERSION", "render_person"]

#: Bumped whenever the drawing changes (part of :attr:`SyntheticPeople.version`).
GENERATOR_VERSION = "paperdoll-v1"

# ATR-18 ids (docs/paper.md §3)
BG, HAT, HAIR, SUNGLASSES, UPPER, SKIRT, PANTS, DRESS, BELT = 0, 1, 2, 3, 4, 5, 6, 7, 8
LSHOE, RSHOE, FACE, LLEG, RLEG, LARM, RARM, BAG, SCARF = 9, 10, 11, 12, 13, 14, 15, 16, 17

_SKIN_TONES = np.array(
    [
        [255, 224, 196],
        [241, 194, 160],
        [224, 172, 130],
        [198, 134, 96],
        [161, 102, 68],
        [120, 74, 48],
        [90, 56, 38],
    ],
    dtype=np.float32,
)
_HAIR_TONES = np.array(
    [
        [20, 16, 14],
        [60, 40, 28],
        [110, 72, 40],
        [180, 140, 80],
        [225, 200, 140],
        [140, 60, 30],
        [130, 130, 130],
    ],
    dtype=np.float32,
)
_TEXTURED = (HAT, UPPER, SKIRT, PANTS, DRESS, BAG, SCARF)


def _hsv_colour(
    rng: np.random.Generator, sat: tuple[float, float] = (0.15, 0.95), val: tuple[float, float] = (0.2, 0.95)
) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(*sat), rng.uniform(*val)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x), round(y)


def _poly(img: np.ndarray, pts: list[tuple[float, float]], value: int) -> None:
    cv2.fillPoly(img, [np.round(np.asarray(pts, dtype=np.float64)).astype(np.int32)], int(value))


def _limb(
    img: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], w0: float, w1: float, value: int
) -> None:
    """A tapered limb segment from p0 (width w0) to p1 (width w1), with rounded joints."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    _poly(img, [(p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2), (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
                (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2), (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2)], value)  # fmt: skip
    cv2.circle(img, _pt(*p0), max(1, round(w0 / 2)), int(value), -1)
    cv2.circle(img, _pt(*p1), max(1, round(w1 / 2)), int(value), -1)


def _ellipse(img: np.ndarray, c: tuple[float, float], axes: tuple[float, float], angle: float, value: int,
             start: float = 0, end: float = 360) -> None:  # fmt: skip
    cv2.ellipse(
        img, _pt(*c), (max(1, round(axes[0])), max(1, round(axes[1]))), angle, start, end, int(value), -1
    )


def _along(p0: tuple[float, float], p1: tuple[float, float], t: float) -> tuple[float, float]:
    return p0[0] + (p1[0] - p0[0]) * t, p0[1] + (p1[1] - p0[1]) * t


def _draw_label_map(rng: np.random.Generator, S: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw one person's ATR-18 label map (S×S uint8) and return it with the drawn attributes."""
    lab = np.zeros((S, S), np.uint8)
    hp = rng.uniform(0.5, 0.97) * S  # person height
    h = hp / 7.2  # head height: the unit of the body
    wf = rng.uniform(0.8, 1.25)  # build
    cx = rng.uniform(0.22, 0.78) * S
    top = rng.uniform(0.01 * S, max(0.02 * S, S - hp * 0.93))
    lean = rng.uniform(-0.25, 0.25) * h  # horizontal offset of the head vs. the hips
    outfit = rng.choice(["dress", "skirt", "pants"], p=[0.3, 0.3, 0.4])
    shorts = outfit == "pants" and rng.random() < 0.3
    sleeves = rng.choice(["none", "short", "long"], p=[0.25, 0.45, 0.3])
    bag = rng.choice(["none", "left", "right", "front"], p=[0.4, 0.2, 0.2, 0.2])
    attrs: dict[str, Any] = {
        "outfit": str(outfit),
        "shorts": bool(shorts),
        "sleeves": str(sleeves),
        "bag": str(bag),
    }

    head_c = (cx + lean, top + 0.5 * h)
    sy = top + 1.3 * h  # shoulder line
    sw = 0.78 * h * wf  # half shoulder width
    scx = cx + 0.6 * lean
    wy, hy = top + 3.0 * h, top + 3.55 * h  # waist, hip lines
    hw = 0.62 * h * wf  # half hip width
    ky, ay = top + 5.1 * h, top + 6.65 * h  # knee, ankle lines

    # legs (person's left = image right): hip joint -> knee -> ankle
    spread_l, spread_r = rng.uniform(0.0, 0.9) * h, rng.uniform(0.0, 0.9) * h
    legs = {}
    for side, sgn, spread in (("L", +1, spread_l), ("R", -1, spread_r)):
        hip = (cx + sgn * 0.33 * h * wf, hy)
        ankle = (cx + sgn * (0.3 * h * wf + spread), ay + rng.uniform(-0.15, 0.1) * h)
        knee = (_along(hip, ankle, 0.5)[0] + rng.uniform(-0.12, 0.12) * h, ky)
        legs[side] = (hip, knee, ankle)
    thigh_w, calf_w = 0.52 * h * wf, 0.3 * h * wf

    # arms: shoulder -> elbow -> hand; angle from the vertical, outward positive
    arms = {}
    for side, sgn in (("L", +1), ("R", -1)):
        a1 = math.radians(rng.uniform(4, 55))
        a2 = a1 + math.radians(rng.uniform(-50, 35))
        if bag == ("left" if side == "L" else "right"):
            a1, a2 = math.radians(rng.uniform(5, 18)), math.radians(rng.uniform(0, 15))
        sh = (scx + sgn * sw * 0.92, sy + 0.12 * h)
        el = (sh[0] + sgn * math.sin(a1) * 1.35 * h, sh[1] + math.cos(a1) * 1.35 * h)
        ha = (el[0] + sgn * math.sin(a2) * 1.25 * h, el[1] + math.cos(a2) * 1.25 * h)
        arms[side] = (sh, el, ha)
    arm_w = 0.27 * h * wf

    long_hair = rng.random() < 0.5
    hair_c = HAIR
    if long_hair:  # hair hanging behind the shoulders, drawn first
        _poly(lab, [(head_c[0] - 0.55 * h, head_c[1]), (head_c[0] + 0.55 * h, head_c[1]),
                    (head_c[0] + 0.62 * h, sy + rng.uniform(0.3, 1.2) * h),
                    (head_c[0] - 0.62 * h, sy + rng.uniform(0.3, 1.2) * h)], hair_c)  # fmt: skip

    # skin: legs, then shoes
    lleg_id = {"L": LLEG, "R": RLEG}
    for side, (hip, knee, ankle) in legs.items():
        _limb(lab, hip, knee, thigh_w, 0.36 * h * wf, lleg_id[side])
        _limb(lab, knee, ankle, 0.36 * h * wf, calf_w, lleg_id[side])
    shoe_h = 0.28 * h
    for side, sgn, lid in (("L", +1, LSHOE), ("R", -1, RSHOE)):
        ankle = legs[side][2]
        _ellipse(lab, (ankle[0] + sgn * 0.12 * h, ankle[1] + 0.12 * h), (0.3 * h * wf, shoe_h), 0, lid)

    # lower garment
    hem_y = hy
    if outfit == "skirt":
        hem_y = min(ky + 0.9 * h, hy + rng.uniform(0.6, 2.4) * h)
        flare = rng.uniform(1.1, 1.9)
        _poly(
            lab,
            [(cx - hw * 0.95, wy), (cx + hw * 0.95, wy), (cx + hw * flare, hem_y), (cx - hw * flare, hem_y)],
            SKIRT,
        )
    elif outfit == "pants":
        _poly(
            lab,
            [
                (cx - hw * 0.98, wy),
                (cx + hw * 0.98, wy),
                (cx + hw * 1.02, hy + 0.35 * h),
                (cx - hw * 1.02, hy + 0.35 * h),
            ],
            PANTS,
        )
        for side in ("L", "R"):
            hip, knee, ankle = legs[side]
            if shorts:
                end = _along(hip, knee, rng.uniform(0.45, 0.8))
                _limb(lab, hip, end, thigh_w * 1.12, thigh_w * 1.05, PANTS)
            else:
                _limb(lab, hip, knee, thigh_w * 1.12, 0.42 * h * wf, PANTS)
                _limb(lab, knee, _along(knee, ankle, 0.93), 0.42 * h * wf, calf_w * 1.3, PANTS)
    # torso garment (dress: torso + skirt part in one label)
    top_id = DRESS if outfit == "dress" else UPPER
    torso_bottom = hy + 0.15 * h if outfit != "skirt" else wy + 0.1 * h
    if outfit == "pants" and rng.random() < 0.5:
        torso_bottom = hy + rng.uniform(0.2, 0.6) * h  # untucked top over the pants
    _poly(
        lab,
        [(scx - sw, sy), (scx + sw, sy), (cx + hw * 1.02, torso_bottom), (cx - hw * 1.02, torso_bottom)],
        top_id,
    )
    _ellipse(lab, (scx, sy + 0.05 * h), (sw, 0.22 * h), 0, top_id, 180, 360)  # rounded shoulders
    if outfit == "dress":
        hem_y = hy + rng.uniform(0.8, 2.8) * h
        flare = rng.uniform(1.1, 2.0)
        _poly(
            lab,
            [(cx - hw * 1.02, wy), (cx + hw * 1.02, wy), (cx + hw * flare, hem_y), (cx - hw * flare, hem_y)],
            DRESS,
        )

    # arms (skin) in front of the torso, then sleeves
    arm_id = {"L": LARM, "R": RARM}
    for side, (sh, el, ha) in arms.items():
        _limb(lab, sh, el, arm_w * 1.05, arm_w, arm_id[side])
        _limb(lab, el, ha, arm_w, arm_w * 0.8, arm_id[side])
        cv2.circle(
            lab, _pt(*ha), max(1, round(arm_w * 0.55)), arm_id[side], -1
        )  # hand (labelled arm, as ATR)
        if sleeves == "short":
            _limb(lab, sh, _along(sh, el, 0.55), arm_w * 1.35, arm_w * 1.2, top_id)
        elif sleeves == "long":
            _limb(lab, sh, el, arm_w * 1.3, arm_w * 1.15, top_id)
            _limb(lab, el, _along(el, ha, 0.85), arm_w * 1.15, arm_w * 1.05, top_id)

    # belt
    if outfit != "dress" or rng.random() < 0.5:
        if rng.random() < 0.3:
            attrs["belt"] = True
            bh = 0.16 * h
            _poly(
                lab,
                [
                    (cx - hw * 0.97, wy - bh / 2),
                    (cx + hw * 0.97, wy - bh / 2),
                    (cx + hw * 0.99, wy + bh / 2),
                    (cx - hw * 0.99, wy + bh / 2),
                ],
                BELT,
            )

    # neck and head
    _poly(lab, [(head_c[0] - 0.2 * h, head_c[1] + 0.3 * h), (head_c[0] + 0.2 * h, head_c[1] + 0.3 * h),
                (scx + 0.22 * h, sy + 0.05 * h), (scx - 0.22 * h, sy + 0.05 * h)], FACE)  # fmt: skip
    if rng.random() < 0.22:  # scarf: around the neck, one end hanging
        attrs["scarf"] = True
        _ellipse(lab, (scx, sy + 0.05 * h), (0.42 * h, 0.2 * h), 0, SCARF)
        side = rng.choice([-1, 1])
        _limb(
            lab,
            (scx + side * 0.2 * h, sy + 0.1 * h),
            (scx + side * 0.3 * h, sy + rng.uniform(0.9, 1.8) * h),
            0.22 * h,
            0.2 * h,
            SCARF,
        )
    hair_back_y = head_c[1] - 0.05 * h
    _ellipse(lab, (head_c[0], hair_back_y), (0.44 * h, 0.52 * h), 0, hair_c)  # hair (behind the face)
    _ellipse(lab, (head_c[0], head_c[1] + 0.06 * h), (0.36 * h, 0.46 * h), 0, FACE)
    # fringe
    _ellipse(lab, (head_c[0], head_c[1] - 0.12 * h), (0.4 * h, 0.3 * h), 0, hair_c, 180, 360)
    if rng.random() < 0.28:  # hat: crown and brim
        attrs["hat"] = True
        _ellipse(lab, (head_c[0], head_c[1] - 0.3 * h), (0.4 * h, 0.32 * h), 0, HAT, 180, 360)
        _ellipse(lab, (head_c[0], head_c[1] - 0.28 * h), (rng.uniform(0.5, 0.8) * h, 0.1 * h), 0, HAT)
    if rng.random() < 0.25:  # sunglasses
        attrs["sunglasses"] = True
        ey = head_c[1] + 0.02 * h
        for sgn in (-1, 1):
            _ellipse(lab, (head_c[0] + sgn * 0.15 * h, ey), (0.12 * h, 0.08 * h), 0, SUNGLASSES)
        cv2.line(
            lab,
            _pt(head_c[0] - 0.1 * h, ey),
            _pt(head_c[0] + 0.1 * h, ey),
            SUNGLASSES,
            max(1, round(0.04 * h)),
        )

    # bag
    if bag != "none":
        bw, bh = rng.uniform(0.5, 0.95) * h, rng.uniform(0.45, 0.85) * h
        if bag == "front":
            bx, by = cx + rng.uniform(-0.6, 0.6) * hw, wy + rng.uniform(-0.2, 0.5) * h
            cv2.line(
                lab, _pt(scx + rng.choice([-1, 1]) * sw * 0.7, sy), _pt(bx, by), BAG, max(1, round(0.06 * h))
            )
        else:
            ha = arms["L" if bag == "left" else "R"][2]
            bx, by = ha[0], ha[1] + 0.1 * h + bh / 2
            cv2.line(lab, _pt(*ha), _pt(bx, by - bh / 2), BAG, max(1, round(0.05 * h)))
        _poly(
            lab,
            [
                (bx - bw / 2, by - bh / 2),
                (bx + bw / 2, by - bh / 2),
                (bx + bw / 2 * 1.1, by + bh / 2),
                (bx - bw / 2 * 1.1, by + bh / 2),
            ],
            BAG,
        )
    return lab, attrs


def _pattern(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, S: int) -> np.ndarray | None:
    """A texture in [0, 1] over the whole grid (None = plain)."""
    kind = rng.choice(
        ["plain", "hstripes", "vstripes", "checks", "dots", "noise"], p=[0.35, 0.15, 0.12, 0.12, 0.1, 0.16]
    )
    period = rng.uniform(0.025, 0.09) * S
    ph = rng.uniform(0, period)
    if kind == "plain":
        return None
    if kind == "hstripes":
        return ((yy + ph) % period < period / 2).astype(np.float32)
    if kind == "vstripes":
        return ((xx + ph) % period < period / 2).astype(np.float32)
    if kind == "checks":
        return (((xx + ph) // period + (yy + ph) // period) % 2).astype(np.float32)
    if kind == "dots":
        dx = (xx + ph) % period - period / 2
        dy = (yy + ph) % period - period / 2
        return (dx * dx + dy * dy < (period * 0.25) ** 2).astype(np.float32)
    small = rng.random((max(2, S // 8), max(2, S // 8))).astype(np.float32)
    return cv2.resize(small, (S, S), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _background(rng: np.random.Generator, S: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    c0, c1 = _hsv_colour(rng, (0.0, 0.6), (0.25, 0.95)), _hsv_colour(rng, (0.0, 0.6), (0.25, 0.95))
    ang = rng.uniform(0, 2 * math.pi)
    t = ((xx * math.cos(ang) + yy * math.sin(ang)) / S + 1.0) / 2.0
    img = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]).astype(np.float32)
    if rng.random() < 0.5:  # a floor/wall horizon
        hy = round(rng.uniform(0.45, 0.9) * S)
        img[hy:] = img[hy:] * rng.uniform(0.6, 1.0) + _hsv_colour(rng, (0, 0.4), (0.2, 0.8)) * 0.3
    for _ in range(int(rng.integers(3, 13))):  # distractor shapes
        col = tuple(float(v) for v in _hsv_colour(rng))
        kind = rng.integers(0, 4)
        x, y = rng.uniform(-0.1, 1.1, 2) * S
        r = rng.uniform(0.04, 0.3) * S
        if kind == 0:
            cv2.ellipse(
                img,
                _pt(x, y),
                (max(1, round(r)), max(1, round(r * rng.uniform(0.3, 1.5)))),
                float(rng.uniform(0, 180)),
                0,
                360,
                col,
                -1,
            )
        elif kind == 1:
            cv2.rectangle(
                img, _pt(x, y), _pt(x + r * rng.uniform(0.5, 2), y + r * rng.uniform(0.5, 3)), col, -1
            )
        elif kind == 2:
            pts = np.stack([x + rng.uniform(-r, r, 5), y + rng.uniform(-r, r, 5)], 1)
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], col)
        else:
            cv2.line(
                img,
                _pt(x, y),
                _pt(x + rng.uniform(-1, 1) * S, y + rng.uniform(-1, 1) * S),
                col,
                max(1, round(rng.uniform(0.005, 0.04) * S)),
            )
    return img


def render_person(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Image, label map and attributes of synthetic person ``index`` of generator ``seed`` at ``size``² px.

    Deterministic in ``(seed, index, size)``: the random stream is ``numpy.random.default_rng([seed, index])``.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    S = int(size)
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    lab, attrs = _draw_label_map(rng, S)
    img = _background(rng, S, xx, yy)

    # colours: one skin tone for face/arms/legs (so only shape and position tell them apart)
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.08)
    base = np.zeros((len(ATR18), 3), np.float32)
    alt = np.zeros((len(ATR18), 3), np.float32)
    base[[FACE, LARM, RARM, LLEG, RLEG]] = skin
    base[HAIR] = _HAIR_TONES[rng.integers(len(_HAIR_TONES))] * rng.uniform(0.85, 1.15)
    shoe = _hsv_colour(rng, (0, 0.8), (0.05, 0.9))
    base[LSHOE] = base[RSHOE] = shoe
    base[SUNGLASSES] = _hsv_colour(rng, (0, 0.5), (0.0, 0.2))
    base[BELT] = _hsv_colour(rng, (0.2, 0.9), (0.1, 0.7))
    for k in _TEXTURED:
        base[k] = _hsv_colour(rng)
        alt[k] = _hsv_colour(rng) if rng.random() < 0.6 else base[k] * rng.uniform(0.4, 0.8)
    alt[~np.isin(np.arange(len(ATR18)), _TEXTURED)] = base[~np.isin(np.arange(len(ATR18)), _TEXTURED)]

    person = lab > 0
    p_map = np.zeros((S, S), np.float32)
    for k in _TEXTURED:
        m = lab == k
        if m.any():
            pat = _pattern(rng, xx, yy, S)
            if pat is not None:
                p_map[m] = pat[m]
    col = base[lab] * (1 - p_map[..., None]) + alt[lab] * p_map[..., None]
    img[person] = col[person]

    # lighting, blur, noise
    g = rng.uniform(-0.25, 0.25)
    light = 1.0 + g * (xx / S - 0.5) + rng.uniform(-0.15, 0.15) * (yy / S - 0.5)
    img *= light[..., None] * rng.uniform(0.8, 1.15)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 1.0))
    img += rng.normal(0.0, rng.uniform(2.0, 9.0), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), lab, attrs


class SyntheticPeople(Dataset):
    """Synthetic paper-doll people with ATR-18 labels (see the module docstring).

    Args:
        n: number of images.
        size: side of the square images in pixels.
        seed: generator seed; image ``i`` depends only on ``(seed, i)`` (and ``size``).
    """

    name = "synthetic"

    def __init__(self, n: int = 400, size: int = 128, seed: int = 0) -> None:
        if int(n) < 1 or int(size) < 16:
            raise QparseError(f"synthetic data needs n >= 1 and size >= 16 (got n={n}, size={size})")
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.label_set = ATR18
        self.ids = [f"{i:05d}" for i in range(self.n)]
        self.version = f"{GENERATOR_VERSION} seed={self.seed} size={self.size} n={self.n}"

    def load(self, i: int) -> Sample:
        img, lab, _ = render_person(self.seed, i, self.size)
        return Sample(img, lab, self.ids[i])

    def attributes(self, i: int) -> dict[str, Any]:
        """What was drawn for image ``i`` (outfit, sleeves, bag side, hat, ...)."""
        return render_person(self.seed, i, self.size)[2]

    def splits(self) -> dict[str, list[str]]:
        """80/10/10 by index order: first 80 % train, next 10 % val, last 10 % test."""
        n_val = n_test = max(1, round(0.1 * self.n)) if self.n >= 3 else 0
        n_train = self.n - n_val - n_test
        return {
            "train": self.ids[:n_train],
            "val": self.ids[n_train : n_train + n_val],
            "test": self.ids[n_train + n_val :],
        }

    def prepare_args(self) -> list[str]:
        return [
            "--dataset",
            "synthetic",
            "--n",
            str(self.n),
            "--gen-size",
            str(self.size),
            "--seed",
            str(self.seed),
        ]

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(n=self.n, size=self.size, seed=self.seed, generator=GENERATOR_VERSION)
        return d
