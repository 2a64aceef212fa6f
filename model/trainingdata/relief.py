"""Shadow-casting landforms drawn into an image: boulders, rim segments and ledges with
their shading and cast shadows (the rendered casters of one ice family and of its look-alikes)."""

import math
from typing import Optional, Tuple

import numpy as np

from .imaging import shift, sun_vectors


def render_feature(img: np.ndarray, origin: Tuple[int, int], cy: float, cx: float, ry: float, rx: float,
                    angle: float, sun_azimuth_deg: float, sun_elevation_deg: float, height_px: float,
                    level: Optional[float] = None, gain: float = 1.0, shadow_factor: float = 0.35,
                    edge_px: float = 0.5, penumbra_px: float = 0.7, ambient: float = 0.25, max_rel: float = 1.6):
    """Draw an elliptical dome (boulder, or ridge/rim segment when elongated) and its cast shadow.

    ``img`` is a window of a larger image whose pixel (0, 0) is global pixel ``origin``;
    centre and sizes are global pixels. ``angle`` (radians) turns the ``rx`` axis from the
    column axis towards the row axis. ``level`` is the absolute brightness of a flat-lit
    body; when None the body is ``gain`` times the underlying terrain (seamless tiling).
    Modifies ``img`` in place and returns (bbox, body_alpha, shadow_alpha) where bbox is
    (r0, r1, c0, c1) in ``img`` coordinates, or None when the feature misses the window.
    """
    to_sun, shadow_dir = sun_vectors(sun_azimuth_deg)
    elev = math.radians(max(3.0, min(85.0, sun_elevation_deg)))
    length = height_px / math.tan(elev)
    ext = max(rx, ry) + 2.0 + edge_px + penumbra_px
    gr0 = int(math.floor(min(cy - ext, cy + shadow_dir[0] * length - ext)))
    gr1 = int(math.ceil(max(cy + ext, cy + shadow_dir[0] * length + ext))) + 1
    gc0 = int(math.floor(min(cx - ext, cx + shadow_dir[1] * length - ext)))
    gc1 = int(math.ceil(max(cx + ext, cx + shadow_dir[1] * length + ext))) + 1
    oy, ox = origin
    h, w = img.shape
    r0, r1 = max(gr0 - oy, 0), min(gr1 - oy, h)
    c0, c1 = max(gc0 - ox, 0), min(gc1 - ox, w)
    if r0 >= r1 or c0 >= c1:
        return None
    dy = (np.arange(r0, r1, dtype=np.float32) + oy - cy)[:, None]
    dx = (np.arange(c0, c1, dtype=np.float32) + ox - cx)[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    # ellipse frame, normalised so the body is the unit disc
    u = (dx * ca + dy * sa) / rx
    v = (-dx * sa + dy * ca) / ry
    rho = np.sqrt(u * u + v * v)
    rmin = min(rx, ry)
    body = np.clip((1.0 - rho) * rmin / max(edge_px, 0.05) + 0.5, 0.0, 1.0)
    # cast shadow: the body swept along the shadow direction, tapering towards its tip
    su = (shadow_dir[1] * ca + shadow_dir[0] * sa) * length / rx
    sv = (-shadow_dir[1] * sa + shadow_dir[0] * ca) * length / ry
    seg2 = su * su + sv * sv
    if seg2 > 1e-9:
        t = np.clip((u * su + v * sv) / seg2, 0.0, 1.0)
    else:
        t = np.zeros_like(u)
    du, dv = u - t * su, v - t * sv
    dist = np.sqrt(du * du + dv * dv)
    radius = 1.0 - 0.35 * t
    shadow = np.clip((radius - dist) * rmin / max(penumbra_px, 0.05) + 0.5, 0.0, 1.0)
    shadow *= 1.0 - body
    # shading of a paraboloid dome h = height_px * (1 - rho^2), Lambert against the sun
    inb = rho < 1.0
    gx = np.where(inb, -2.0 * height_px * (u * ca / rx - v * sa / ry), 0.0)  # dh/dcol
    gy = np.where(inb, -2.0 * height_px * (u * sa / rx + v * ca / ry), 0.0)  # dh/drow
    az = math.radians(sun_azimuth_deg)
    se, sn, sz = math.cos(elev) * math.sin(az), math.cos(elev) * math.cos(az), math.sin(elev)
    ndots = (-gx * se + gy * sn + sz) / np.sqrt(gx * gx + gy * gy + 1.0)
    rel = np.clip(ndots / sz, 0.0, max_rel)
    shade = ambient + (1.0 - ambient) * rel
    win = img[r0:r1, c0:c1]
    under = win * (1.0 - shadow * (1.0 - shadow_factor))
    if level is None:
        body_val = win * gain * shade
    else:
        body_val = level * shade
    win[...] = np.clip(under * (1.0 - body) + body * body_val, 0.0, 1.0)
    return (r0, r1, c0, c1), body, shadow


def render_ridge(img: np.ndarray, cy: float, cx: float, half_length: float, half_width: float, angle: float,
                  curvature: float, amplitude: float, sun_azimuth_deg: float, sun_elevation_deg: float,
                  shadow_factor: float = 0.35):
    """Shade a curved ridge (a crater-rim segment or ledge) into ``img`` in place.

    The ridge is a local height field (Gaussian cross-section, flat-topped taper along its
    length, bent by ``curvature``); the image is multiplied by its Lambert shading relative
    to flat ground, and by ``shadow_factor`` where the ridge casts a shadow (ray-marched).
    Returns (bbox, relief, shadow) like ``render_feature``, or None off the image.
    """
    to_sun, shadow_dir = sun_vectors(sun_azimuth_deg)
    elev = math.radians(max(3.0, min(85.0, sun_elevation_deg)))
    tan_el = math.tan(elev)
    length = amplitude / tan_el
    ext = max(half_length * 1.3, half_width * 3.0) + abs(curvature) * half_length ** 2 + 2.0
    h, w = img.shape
    r0 = max(0, int(math.floor(min(cy - ext, cy - ext + shadow_dir[0] * length))))
    r1 = min(h, int(math.ceil(max(cy + ext, cy + ext + shadow_dir[0] * length))) + 1)
    c0 = max(0, int(math.floor(min(cx - ext, cx - ext + shadow_dir[1] * length))))
    c1 = min(w, int(math.ceil(max(cx + ext, cx + ext + shadow_dir[1] * length))) + 1)
    if r0 >= r1 - 2 or c0 >= c1 - 2:
        return None
    dy = (np.arange(r0, r1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(c0, c1, dtype=np.float32) - cx)[None, :]
    ca, sa = math.cos(angle), math.sin(angle)
    u = dx * ca + dy * sa
    v = -dx * sa + dy * ca - curvature * u * u
    hf = amplitude * np.exp(-0.5 * (v / half_width) ** 2) * np.exp(-((u / half_length) ** 4))
    gy, gx = np.gradient(hf)
    az = math.radians(sun_azimuth_deg)
    se, sn, sz = math.cos(elev) * math.sin(az), math.cos(elev) * math.cos(az), math.sin(elev)
    rel = np.clip((-gx * se + gy * sn + sz) / np.sqrt(gx * gx + gy * gy + 1.0) / sz, 0.0, 1.35)
    shadow = np.zeros_like(hf)
    steps = int(math.ceil(length)) + 2
    for t in range(1, steps + 1):
        dr = int(round(to_sun[0] * t))
        dc = int(round(to_sun[1] * t))
        above = shift(hf, dr, dc) - hf - t * tan_el
        np.maximum(shadow, np.clip(above / max(tan_el, 0.05) + 0.5, 0.0, 1.0), out=shadow)
    factor = rel * (1.0 - shadow) + shadow * shadow_factor
    win = img[r0:r1, c0:c1]
    win[...] = np.clip(win * factor, 0.0, 1.0)
    relief = (hf > 0.15 * amplitude).astype(np.float32)
    return (r0, r1, c0, c1), relief, shadow



def feature_params(rng: np.random.Generator, size: float, side: int, along: float, sun_elevation_deg: float) -> dict:
    """A boulder or a rim segment / ledge able to shade a patch of length ``size``."""
    max_boulder = max(2.0, side / 100.0)
    if size >= 10 and (size * 0.12 > max_boulder or rng.random() < 0.5):  # rim segment / ledge
        rx = size * rng.uniform(0.5, 0.9)
        ry = max(1.0, rx / rng.uniform(3.0, 6.0))
        return {
            "kind": "ridge", "rx": rx, "ry": ry, "angle": along + rng.normal(0.0, math.radians(10.0)),
            # steep enough on its anti-sun flank to cast a shadow
            "height": ry * math.tan(math.radians(max(3.0, sun_elevation_deg))) * rng.uniform(1.8, 3.0),
            "curvature": rng.uniform(-0.5, 0.2) / rx,  # mostly bowed poleward, like a rim
            "shadow_factor": rng.uniform(0.25, 0.5),
        }
    rx = min(max(1.0, size * rng.uniform(0.12, 0.3)), max_boulder)
    return {
        "kind": "boulder", "rx": rx, "ry": rx * rng.uniform(0.7, 1.0), "angle": rng.uniform(0, math.pi),
        "height": rx * rng.uniform(0.6, 1.2), "gain": rng.uniform(0.95, 1.2), "edge": rng.uniform(0.5, 1.0),
        "shadow_factor": rng.uniform(0.25, 0.5),
    }


def draw_feature(img: np.ndarray, feat: dict, cy: float, cx: float, sun_azimuth_deg: float,
                  sun_elevation_deg: float):
    if feat["kind"] == "ridge":
        return render_ridge(img, cy, cx, feat["rx"], feat["ry"], feat["angle"], feat["curvature"], feat["height"],
                             sun_azimuth_deg, sun_elevation_deg, shadow_factor=feat["shadow_factor"])
    return render_feature(img, (0, 0), cy, cx, feat["ry"], feat["rx"], feat["angle"], sun_azimuth_deg,
                           sun_elevation_deg, feat["height"], gain=feat["gain"], shadow_factor=feat["shadow_factor"],
                           edge_px=feat["edge"])
