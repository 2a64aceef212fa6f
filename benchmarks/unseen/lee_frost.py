"""Lee frost: residual water ice tucked into the shade behind sunlit relief, drawn blind to the
training generator from the paper's description (brighter than its surroundings, no shadow of its
own, slightly diffuse edges, on the poleward side of a shading landform; sun to the north = up,
azimuth within about 35 degrees).

Shade: a relative black top-hat (grey closing minus the crop, at a scale matched to the wanted
patch) among the crop's darkest pixels; a connected region is kept only when the band just
SUNWARD of it is bright (the lit face of the boulder, scarp or rim that throws the shade), and is
favoured when that band is brighter than the ground on its lee side.

Ice, in one chosen region per patch: filling it (distance transform), a crescent along its
poleward rim, a strip at the foot of the shading relief, or a spray of 1-3 px grains; a smooth
random field stretched along the shade edge bends the outline, and the edge is a sigmoid of the
signed distance to it (0.8 px to ~12 px). Brightness is ADDED (partly scaled by the grain's own
brightness, like an albedo change), modulated by anisotropic streaks, sized so the icy core sits
``contrast`` above a distance-weighted mean of the non-ice terrain around it; a soft knee, not a
clip, near white. Reported per connected patch: (largest extent px, achieved contrast).
"""

import numpy as np
from scipy import ndimage as ndi


def _field(shape, rng, sigma, angle, stretch):
    """Smooth zero-mean unit-variance noise, elongated `stretch` times along `angle` (radians)."""
    fr, fc = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij")
    along, across = fr * np.cos(angle) + fc * np.sin(angle), -fr * np.sin(angle) + fc * np.cos(angle)
    gain = np.exp(-2 * np.pi ** 2 * ((along * sigma * stretch) ** 2 + (across * sigma) ** 2))  # oriented Gaussian
    noise = np.fft.ifft2(np.fft.fft2(rng.standard_normal(shape)) * gain).real
    return (noise - noise.mean()) / (noise.std() + 1e-9)


def _shift(mask, dr, dc, steps):
    """Union of the mask moved 1..steps pixels along (dr, dc)."""
    out = np.zeros_like(mask)
    for k in range(1, steps + 1):
        out |= ndi.shift(mask.astype(np.uint8), (dr * k, dc * k), order=0, cval=0) > 0
    return out


def _shade_regions(smooth, size, to_sun, rng):
    """Labelled shade regions at this scale and a selection weight for each (0 = rejected)."""
    k = int(np.clip(2 * size + 7, 9, 81))
    envelope = ndi.grey_closing(smooth, size=(k, k))  # the lit relief around each pixel
    depth = (envelope - smooth) / (envelope + 1e-3)  # relative darkening, so dim crops find shade too
    noise = np.median(np.abs(smooth - ndi.median_filter(smooth, 5))) / (envelope.mean() + 1e-3)
    shade = (depth > max(rng.uniform(0.2, 0.35), 5 * noise)) & (smooth < np.quantile(smooth, rng.uniform(0.1, 0.3)))
    shade = ndi.binary_opening(shade) if size > 6 else shade
    labels, n = ndi.label(shade)
    weights = np.zeros(n + 1)
    band = max(3, min(8, size // 2))
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        # Work in a padded box: the bands need only the region's surroundings.
        box = tuple(slice(max(0, s.start - band - 1), s.stop + band + 1) for s in sl)
        region, lit_all = labels[box] == i, smooth[box]
        if region.sum() < 4:
            continue
        sunward = _shift(region, to_sun[0], to_sun[1], band) & ~shade[box]  # the caster sits sunward
        lee = _shift(region, -to_sun[0], -to_sun[1], band) & ~shade[box]
        if sunward.sum() < 3:
            continue
        dark = lit_all[region].mean()
        lit = np.percentile(lit_all[sunward], 75) - dark
        casting = lit - (np.percentile(lit_all[lee], 75) - dark if lee.any() else 0)
        extent = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
        if lit > max(0.05, 0.35 * (envelope[box][region].mean() - dark)) and casting > -0.1:
            cut = any(s.start == 0 or s.stop == n_ for s, n_ in zip(sl, smooth.shape))  # caster may lie outside
            weights[i] = lit * min(1, extent / size) ** 2 * (1 + 5 * max(casting, 0)) * (0.3 if cut else 1)
    return labels, weights


def _patch(labels, index, size, to_sun, rng):
    """Soft ice cover (0..1) inside one shade region, or None."""
    region = labels == index
    shape = region.shape
    # Distance to the lit ground beyond the poleward rim, and to the shading relief sunward.
    beyond = _shift(region, -to_sun[0], -to_sun[1], 2) & ~region
    toward = _shift(region, to_sun[0], to_sun[1], 2) & ~region
    d_pole = ndi.distance_transform_edt(~beyond) if beyond.any() else np.full(shape, 1e3)
    d_foot = ndi.distance_transform_edt(~toward) if toward.any() else np.full(shape, 1e3)
    d_in = ndi.distance_transform_edt(region)
    style = rng.choice(["fill", "rim", "foot", "specks"], p=[0.3, 0.3, 0.2, 0.2])
    width = max(1.5, size * rng.uniform(0.15, 0.5))
    score = {"fill": d_in / (d_in.max() + 1e-9), "rim": np.exp(-d_pole / width),
             "foot": np.exp(-d_foot / width), "specks": np.exp(-d_pole / (2 * width))}[style] * region
    if score.max() <= 0:
        return None
    seeds = np.flatnonzero(score > 0.6 * score.max())
    r0, c0 = np.unravel_index(rng.choice(seeds), shape)
    rows, cols = np.indices(shape)
    contour = np.arctan2(to_sun[1], to_sun[0]) + np.pi / 2  # shade edges run across the sun direction
    rough = _field(shape, rng, max(1.0, size / rng.uniform(3, 8)), contour, rng.uniform(1, 3))
    # Reach from the seed, bent by the rough field so the patch ends irregularly, not on a circle.
    reach = np.hypot(rows - r0, cols - c0) / (size / 2) + rough * rng.uniform(0.15, 0.4)
    window = region & (reach < 1)
    if not window.any():
        return None
    if style == "specks":
        pick = rng.choice(np.flatnonzero(window), rng.integers(5, 40))
        dots = np.zeros(shape, bool)
        dots.flat[pick] = True
        core = (ndi.binary_dilation(dots) if rng.random() < 0.5 else dots) & region  # grains of 1 or ~3 px
    else:
        wanted = score / score.max() - reach ** 2 + rough * rng.uniform(0.1, 0.4)
        core = window & (wanted >= np.quantile(wanted[window], rng.uniform(0.0, 0.5)))
        core = ndi.binary_opening(core) if core.sum() > 30 else core
    if core.sum() < 2:
        return None
    signed = ndi.distance_transform_edt(core) - ndi.distance_transform_edt(~core)
    soft = np.exp(rng.uniform(np.log(0.8), np.log(max(1.2, min(size / 3, 12)))))  # optics blur at least a little
    cover = 1 / (1 + np.exp(np.clip(-(signed + 0.5) / soft, -50, 50)))
    # Ice may fade a little past the shade line, never glow across the sunlit ground.
    spill = np.exp(-ndi.distance_transform_edt(~region) / (0.3 * soft + 1))
    return cover * spill * rng.uniform(0.8, 1.0)


def draw(image, rng):
    az = np.radians(np.clip(rng.normal(0, 18), -35, 35))
    to_sun = (-np.cos(az), np.sin(az))  # row/col step toward the sun (north = up)
    smooth = ndi.gaussian_filter(image.astype(np.float64), 0.8)
    out = image.astype(np.float64)
    cover_all = np.zeros(image.shape)
    patches = []
    for _ in range(int(rng.choice([1, 1, 2, 2, 3, 4, 5]))):
        size = int(np.exp(rng.uniform(np.log(3), np.log(150))))  # window across; patches come out smaller
        labels, weights = _shade_regions(smooth, size, to_sun, rng)
        weights[np.unique(labels[cover_all > 0.3])] = 0  # one patch per shade region
        if weights.sum() <= 0:
            continue
        cover = _patch(labels, rng.choice(len(weights), p=weights / weights.sum()), size, to_sun, rng)
        if cover is None:
            continue
        core = cover > 0.5
        if not core.any():
            continue
        # Local background: non-ice terrain, weighted by closeness to the patch.
        near = ndi.gaussian_filter(core.astype(float), max(6, size / 2))
        keep = (1 - cover) * near
        bg = (smooth * keep).sum() / keep.sum()
        target = min(bg + rng.uniform(0.05, 0.8), 0.97)
        streak = _field(image.shape, rng, rng.uniform(1, 3), rng.uniform(0, np.pi), rng.uniform(1, 5))
        texture = np.clip(1 + rng.uniform(0, 0.25) * streak, 0.5, 1.5)
        here = out[core].mean()
        if target <= here + 0.02:
            continue
        albedo = rng.uniform(0, 0.7)  # share of the lift that scales with the grain's own brightness
        out = out + cover * texture * (target - here) * ((1 - albedo) + albedo * np.minimum(out / here, 1.5))
        out = np.where(out > 0.9, 0.9 + 0.1 * np.tanh((out - 0.9) / 0.1), out)  # no flat white
        cover_all = np.maximum(cover_all, cover)
        labelled, _ = ndi.label(core)
        for i, sl in enumerate(ndi.find_objects(labelled), start=1):
            lift = float(out[sl][labelled[sl] == i].mean() - bg)
            if lift > 0.02:  # a fragment left no brighter than its surroundings is not ice
                patches.append((max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), lift))
    if not patches:
        return None
    return np.clip(out, 0, 1).astype(np.float32), patches
