"""Procedural Mars-like terrain for whole sample scenes: fractal relief, albedo, craters, boulders, noise."""

import math
from typing import Optional, Sequence

import numpy as np

from .imaging import DEFAULT_SUN_AZIMUTH_DEG, check_rng, loguniform, sun_vectors
from .relief import render_feature


def _bspline_weights(f: np.ndarray):
    f2, f3 = f * f, f * f * f
    return ((1 - f) ** 3 / 6.0, (3 * f3 - 6 * f2 + 4) / 6.0, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6.0, f3 / 6.0)


class _Noise:
    """Multi-octave lattice noise with cubic B-spline interpolation, evaluable on any window
    of a (height x width) canvas: windows of the same canvas join seamlessly.

    Octaves of spacing >= 4 * ``COARSE_STEP`` are summed on a grid of that step (aligned to
    the canvas, so still seamless) and B-spline-interpolated from it: one interpolation
    instead of one per octave."""

    COARSE_STEP = 8

    def __init__(self, height: int, width: int, rng: np.random.Generator, spacings: Sequence[float],
                 amplitudes: Sequence[float]):
        self.layers = []
        for s, a in zip(spacings, amplitudes):
            lat = rng.standard_normal((int(math.ceil(height / s)) + 8, int(math.ceil(width / s)) + 8), dtype=np.float32)
            self.layers.append((float(s), float(a), lat))

    @staticmethod
    def _weights(coords: np.ndarray, s: float):
        """Dense (len(coords) x lattice span) interpolation matrix and the span's first index."""
        pos = (coords.astype(np.float64) + 0.5) / s + 4.0
        i = np.floor(pos).astype(np.int64)
        wts = _bspline_weights(pos - i)
        base = int(i.min()) - 1
        mat = np.zeros((len(coords), int(i.max()) + 3 - base), dtype=np.float32)
        rows = np.arange(len(coords))
        for k in range(4):
            mat[rows, i - 1 + k - base] = wts[k]
        return mat, base

    @classmethod
    def _interp(cls, lat: np.ndarray, s: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        # separable: rows by a (sparse-as-dense) matrix product, columns likewise for coarse
        # lattices or by 4 gathers for fine ones
        wy, by = cls._weights(ys, s)
        rows = lat[by:by + wy.shape[1]]
        if s >= 8:
            wx, bx = cls._weights(xs, s)
            tmp = rows[:, bx:bx + wx.shape[1]] @ wx.T
        else:
            pos = (xs.astype(np.float64) + 0.5) / s + 4.0
            ix = np.floor(pos).astype(np.int64)
            wts = [x.astype(np.float32) for x in _bspline_weights(pos - ix)]
            tmp = wts[0][None, :] * rows[:, ix - 1]
            for k in (1, 2, 3):
                tmp += wts[k][None, :] * rows[:, ix - 1 + k]
        return wy @ tmp

    def window(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        ys = np.arange(r0, r1, dtype=np.float64)
        xs = np.arange(c0, c1, dtype=np.float64)
        out = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
        q = self.COARSE_STEP
        coarse = [(s, a, lat) for s, a, lat in self.layers if s >= 4 * q]
        for s, a, lat in self.layers:
            if s < 4 * q:
                out += np.float32(a) * self._interp(lat, s, ys, xs)
        if coarse:
            wy, by = self._weights(ys, q)
            wx, bx = self._weights(xs, q)
            # the coarse grid's node L lies at pixel coordinate (L - 4) * q - 0.5
            gy = (np.arange(by, by + wy.shape[1]) - 4.0) * q - 0.5
            gx = (np.arange(bx, bx + wx.shape[1]) - 4.0) * q - 0.5
            grid = np.zeros((len(gy), len(gx)), dtype=np.float32)
            for s, a, lat in coarse:
                grid += np.float32(a) * self._interp(lat, s, gy, gx)
            ny, nx, gr, gc = len(ys), len(xs), grid.shape[0], grid.shape[1]
            if gr * gc * nx + ny * gr * nx <= ny * gr * gc + ny * gc * nx:
                out += wy @ (grid @ wx.T)
            else:
                out += (wy @ grid) @ wx.T
        return out


class Terrain:
    """A procedural Mars-like scene on a (height x width) canvas, rendered window by window."""

    def __init__(self, height: int, width: int, rng: np.random.Generator, scale: float = 1.0,
                 sun_azimuth_deg: float = DEFAULT_SUN_AZIMUTH_DEG, sun_elevation_deg: Optional[float] = None):
        self.h, self.w = int(height), int(width)
        self.scale = float(scale)
        self.sun_az = float(sun_azimuth_deg)
        self.sun_el = float(rng.uniform(20.0, 40.0) if sun_elevation_deg is None else sun_elevation_deg)
        big = max(self.h, self.w)
        spacings = []
        s = 2.0
        while s <= max(4.0, min(big, 512.0 * self.scale)):
            spacings.append(s)
            s *= 2.0
        # slopes of an octave ~ amplitude / spacing; hurst ~0.8-0.95 keeps all scales visible
        # an octave's slopes ~ 0.55 amplitude / spacing; hurst > 1 makes the relief smooth and
        # rolling, like Mars at this scale, and the total slope spread sets the scene contrast
        hurst = rng.uniform(0.95, 1.25)
        slope = loguniform(rng, 0.04, 0.2)
        amp = slope / (0.55 * math.sqrt(sum(s ** (2 * hurst - 2) for s in spacings)))
        self.height_noise = _Noise(self.h, self.w, rng, spacings, [amp * s ** hurst for s in spacings])
        alb_sp = [s for s in spacings if s >= 8 * self.scale] or spacings[-1:]
        alb_amp = rng.uniform(0.015, 0.06)
        self.albedo_noise = _Noise(self.h, self.w, rng, alb_sp + [2.0],
                                   [alb_amp] * len(alb_sp) + [rng.uniform(0.01, 0.04)])
        self.level = rng.uniform(0.35, 0.55)
        self.ambient = rng.uniform(0.15, 0.3)
        self.noise_sigma = rng.uniform(0.004, 0.012)
        area_units = self.h * self.w / (256.0 * self.scale) ** 2
        # craters: power-law sizes
        density = loguniform(rng, 8.0, 80.0)
        n = int(rng.poisson(density * area_units))
        rmin, rmax = 2.0 * self.scale, min(90.0 * self.scale, 0.35 * min(self.h, self.w))
        u = rng.random(n)
        radius = rmin * (1 - u * (1 - (rmin / rmax) ** 1.8)) ** (-1 / 1.8)
        fresh = rng.random(n)
        self.craters = {
            "y": rng.uniform(-20, self.h + 20, n), "x": rng.uniform(-20, self.w + 20, n), "r": radius,
            "depth": radius * (0.1 + 0.35 * fresh ** 2), "rim": radius * (0.02 + 0.05 * fresh),
        }
        # boulders
        bdensity = loguniform(rng, 1.0, 80.0)
        nb = int(rng.poisson(bdensity * area_units))
        br = np.array([loguniform(rng, 0.5, 1.8) * self.scale for _ in range(nb)])
        self.boulders = {
            "y": rng.uniform(0, self.h, nb), "x": rng.uniform(0, self.w, nb), "rx": br,
            "ry": br * rng.uniform(0.6, 1.0, nb), "angle": rng.uniform(0, math.pi, nb),
            "height": br * rng.uniform(0.5, 1.2, nb), "gain": rng.uniform(0.9, 1.2, nb),
            "shadow": rng.uniform(0.35, 0.6, nb),
        }
        self.noise_seed = int(rng.integers(0, 2 ** 62))

    def render(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        hh = self.height_noise.window(r0 - 1, r1 + 1, c0 - 1, c1 + 1)
        shadow = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
        to_sun, _ = sun_vectors(self.sun_az)
        tan_el = math.tan(math.radians(self.sun_el))
        cr = self.craters
        reach = 3.0 * cr["r"]
        hit = np.nonzero((cr["y"] + reach >= r0 - 1) & (cr["y"] - reach <= r1 + 1) &
                         (cr["x"] + reach >= c0 - 1) & (cr["x"] - reach <= c1 + 1))[0]
        for i in hit:
            cy, cx, R, D, H = cr["y"][i], cr["x"][i], cr["r"][i], cr["depth"][i], cr["rim"][i]
            e = 3.0 * R
            a0, a1 = max(int(cy - e), r0 - 1), min(int(cy + e) + 2, r1 + 1)
            b0, b1 = max(int(cx - e), c0 - 1), min(int(cx + e) + 2, c1 + 1)
            if a0 >= a1 or b0 >= b1:
                continue
            dy = (np.arange(a0, a1, dtype=np.float32) + 0.5 - cy)[:, None]
            dx = (np.arange(b0, b1, dtype=np.float32) + 0.5 - cx)[None, :]
            d = np.sqrt(dy * dy + dx * dx) / R
            # parabolic bowl up to the rim, ejecta blanket falling off as r^-3, zero from 3 R
            outer = H * np.clip((np.maximum(d, 1.0) ** -3.0 - 1.0 / 27.0) / (1.0 - 1.0 / 27.0), 0.0, None)
            prof = np.where(d < 1.0, -D + (D + H) * d ** 2, outer)
            hh[a0 - (r0 - 1):a1 - (r0 - 1), b0 - (c0 - 1):b1 - (c0 - 1)] += prof.astype(np.float32)
            # analytic cast shadow of the sunward rim onto the crater interior
            s0, s1 = max(a0, r0), min(a1, r1)
            t0, t1 = max(b0, c0), min(b1, c1)
            if s0 >= s1 or t0 >= t1:
                continue
            py = (np.arange(s0, s1, dtype=np.float32) + 0.5 - cy)[:, None]
            px = (np.arange(t0, t1, dtype=np.float32) + 0.5 - cx)[None, :]
            rr2 = py * py + px * px
            inside = rr2 < R * R
            b = py * to_sun[0] + px * to_sun[1]
            t = -b + np.sqrt(np.maximum(b * b - (rr2 - R * R), 0.0))
            hp = -D + (D + H) * rr2 / (R * R)
            sh = np.clip(((H - hp) / tan_el - t) / (0.8 * self.scale) + 0.5, 0.0, 1.0) * inside
            sub = shadow[s0 - r0:s1 - r0, t0 - c0:t1 - c0]
            np.maximum(sub, sh, out=sub)
        # (in place where it matters: a scene strip is 1024 x width pixels)
        gy = hh[2:, 1:-1] - hh[:-2, 1:-1]  # 2 d/drow (southward)
        gx = hh[1:-1, 2:] - hh[1:-1, :-2]  # 2 d/dcol (eastward)
        del hh
        gy *= 0.5
        gx *= 0.5
        az, el = math.radians(self.sun_az), math.radians(self.sun_el)
        se, sn, sz = math.cos(el) * math.sin(az), math.cos(el) * math.cos(az), math.sin(el)
        # normal ~ (-dh/dx_east, -dh/dy_north, 1) with dh/dy_north = -dh/drow
        norm = gx * gx
        norm += gy * gy
        norm += 1.0
        np.sqrt(norm, out=norm)
        gx *= np.float32(-se / sz)
        gy *= np.float32(sn / sz)
        rel = gx
        rel += gy
        rel += np.float32(1.0)
        del gy
        rel /= norm  # Lambert shading relative to flat ground
        del norm
        np.clip(rel, 0.0, 2.2, out=rel)
        np.subtract(np.float32(1.0), shadow, out=shadow)
        rel *= shadow
        del shadow
        img = rel
        img *= np.float32(1.0 - self.ambient)
        img += np.float32(self.ambient)
        albedo = self.albedo_noise.window(r0, r1, c0, c1)
        albedo += np.float32(1.0)
        img *= albedo
        del albedo
        img *= np.float32(self.level)
        b = self.boulders
        m = 6.0 * self.scale + 8.0
        for i in np.nonzero((b["y"] >= r0 - m) & (b["y"] < r1 + m) & (b["x"] >= c0 - m) & (b["x"] < c1 + m))[0]:
            render_feature(img, (r0, c0), b["y"][i], b["x"][i], b["ry"][i], b["rx"][i], b["angle"][i], self.sun_az,
                            self.sun_el, b["height"][i], gain=b["gain"][i], shadow_factor=b["shadow"][i],
                            edge_px=0.6, ambient=self.ambient)
        nrng = np.random.default_rng([self.noise_seed, r0, c0, r1, c1])
        noise = nrng.standard_normal(img.shape, dtype=np.float32)
        noise *= np.float32(self.noise_sigma)
        img += noise
        del noise
        return np.clip(img, 0.0, 1.0, out=img)


def make_terrain(shape, rng, *, scale=None, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, sun_elevation_deg=None):
    """Synthetic Mars-like terrain: fractal relief, albedo variation, craters with shaded rims
    and rim shadows, boulders with cast shadows, sensor noise. float32 in [0, 1].

    ``scale`` is pixels per "browse pixel": features are sized for a 256-px view at 1 (the
    default is ``min(shape) / 256``, at least 0.5), so a 1024-px chunk uses 4.
    """
    check_rng(rng)
    h, w = int(shape[0]), int(shape[1])
    if h < 8 or w < 8:
        raise ValueError("terrain shape must be at least 8x8, got %r" % ((h, w),))
    if scale is None:
        scale = max(0.5, min(h, w) / 256.0)
    t = Terrain(h, w, rng, scale=scale, sun_azimuth_deg=sun_azimuth_deg, sun_elevation_deg=sun_elevation_deg)
    return t.render(0, h, 0, w)
