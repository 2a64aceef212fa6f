"""Cap remnants: water ice left where the retreating seasonal cap's shade lasted longest.

No ice outline is drawn. A relief is estimated from the crop itself (photoclinometry-like: brightness
relative to its surroundings is read as the slope toward a sun in the north, azimuth varied by up to
~35 deg, and integrated down-sun), and every pixel's horizon toward the sun is measured on it. A
shade-duration proxy adds that horizon (cast shade lasts while the sun climbs), the observed shade
(dark, pole-facing facets) and multi-scale noise (patchy cap thickness, roughness). Each patch is the
connected region around a seed in or beside shade the crop really shows, cut at the threshold that gives
it the chosen size: what survives of the cap, with organic outlines on the poleward side of real relief.
Its brightness is ice albedo times the light the terrain receives (dim in deep cast shadow, brightest
where it runs out of the shade), scaled to the chosen contrast above the ring of ground around it, with
inner texture, some fine relief showing through, a ramp inside the outline, a blur from sharp to very
diffuse and sometimes a faint frost fringe; highlights are compressed toward white, never clipped."""

import numpy as np
from scipy import ndimage as ndi

PAD = 64


def _noise(rng, shape, scales):
    field = sum(w * ndi.gaussian_filter(rng.standard_normal(shape), s) * s for s, w in scales)
    return (field - field.mean()) / (field.std() + 1e-9)


def _z(a):
    med = np.median(a)
    return (a - med) / (1.4826 * np.median(np.abs(a - med)) + 1e-9)


def _knee(x, k=0.8):
    # compress towards 1 (never reaching it) instead of clipping: bright ice forms no flat white plateau
    over = np.maximum(x - k, 0)
    return np.where(x > k, k + (1 - k) * over / (1 - k + over), x)


def _shade_duration(image, rng):
    """Shade-duration proxy and relative darkness, in the crop's frame."""
    azimuth = float(np.clip(rng.normal(0, 15), -35, 35))
    padded = np.pad(image, PAD, mode="reflect")
    frame = ndi.rotate(padded, azimuth, reshape=False, order=1, mode="reflect")  # down-sun = +rows
    smooth = ndi.gaussian_filter(frame, 1.2)
    ground = ndi.gaussian_filter(frame, 18)
    slope = (smooth - ground) / (ground + 1e-3)  # lit facets face the sun, i.e. north
    height = np.cumsum(slope, axis=0)
    height -= ndi.gaussian_filter(height, 25)  # integration drift
    horizon = np.zeros_like(height)
    for d in range(1, 41):  # steepest rise toward the sun within 40 px
        horizon = np.maximum(horizon, (np.roll(height, d, axis=0) - height) / d)
    horizon = ndi.gaussian_filter(horizon, (0.7, 2.0))  # integration leaves down-sun streaks
    back = lambda a: ndi.rotate(a, -azimuth, reshape=False, order=1, mode="reflect")[PAD:-PAD, PAD:-PAD]
    return back(horizon), -back(slope)


def draw(image, rng):
    image = np.asarray(image, dtype=np.float64)
    shape = image.shape
    horizon, dark = _shade_duration(image, rng)
    h_z, d_z = _z(horizon), _z(dark)
    weight = rng.uniform(0.6, 0.9)
    duration = weight * h_z + (1 - weight) * d_z + rng.uniform(0.15, 0.5) * _noise(rng, shape, ((2, 0.3), (5, 0.5), (11, 0.4)))
    duration = ndi.gaussian_filter(duration, rng.uniform(0.7, 2.0))
    # shade the crop really shows; seeds sit in or beside it, behind a rise toward the sun
    spread = 1.4826 * np.median(np.abs(dark - np.median(dark)))  # mottled ground: only its outliers are shade
    shade = ndi.binary_opening(dark > max(0.07, np.quantile(dark, 0.85), 2.0 * spread), np.ones((3, 3)))
    interior = np.zeros(shape, bool)
    interior[4:-4, 4:-4] = True
    seeds = interior & (h_z > 1.0) & ndi.binary_dilation(shade, iterations=3)
    if seeds.sum() < 5:
        return None
    smooth = ndi.gaussian_filter(image, 1.0)
    out = image.copy()
    used = np.zeros(shape, bool)
    patches = []
    count = min(1 + rng.poisson(1.0), 6)
    for _ in range(3 * count):
        free = seeds & ~used
        if len(patches) == count or not free.any():
            break
        score = duration[free]
        p = np.exp((score - score.max()) / max(score.std(), 1e-3) * 1.5)
        seed = tuple(np.argwhere(free)[rng.choice(free.sum(), p=p / p.sum())])
        size = float(np.exp(rng.uniform(np.log(3), np.log(80))))
        for _ in range(4):  # a patch must keep to shade the crop shows, or it shrinks toward its seed
            region = _grow(duration, used, seed, size)
            shaded = region is not None and (ndi.binary_dilation(region[0], iterations=3) & shade).sum() >= max(3, 0.25 * region[0].sum())
            if region is None or shaded:
                break
            size *= 0.6
        if not shaded:
            continue
        comp, thresh = region
        top = duration[comp].max()
        ramp = (0.5 + 0.5 * np.clip((duration - thresh) / (rng.uniform(0.05, 1.0) * (top - thresh) + 1e-6), 0, 1)) * comp
        sigma = float(np.exp(rng.uniform(np.log(0.3), np.log(max(0.6, 0.3 * size)))))
        reach = int(np.ceil(1.5 * sigma))  # the soft edge spreads outward, not into the patch
        disk = np.hypot(*np.mgrid[-reach:reach + 1, -reach:reach + 1]) <= reach
        cover = ndi.gaussian_filter(ndi.grey_dilation(ramp, footprint=disk), sigma)
        cover /= max(cover.max(), 1e-6)
        if rng.random() < 0.4:  # thin frost fringe beyond the patch
            cover = np.maximum(cover, rng.uniform(0.1, 0.35) * ndi.gaussian_filter(cover, min(3 * sigma, 0.3 * size) + 2))
        core = cover > 0.5
        near = ndi.binary_dilation(core, iterations=int(3 + size / 3)) & ~ndi.binary_dilation(cover > 0.2, iterations=1)
        ring = float(np.median(image[near])) if near.any() else float(np.median(image))
        contrast = min(float(np.exp(rng.uniform(np.log(0.05), np.log(0.8)))), 0.9 - ring)
        if contrast < 0.05:
            continue
        # ice albedo times the light the terrain itself receives: in a deep cast shadow only diffuse sky
        # light, so ice there stays dim and shows brightest where it runs out of the shade, poleward
        diffuse = rng.uniform(0.1, 0.45)
        light = diffuse + (1 - diffuse) * np.clip(smooth / max(ring, 1e-3), 0, 1.15)
        texture = 1 + rng.uniform(0.02, 0.08) * _noise(rng, shape, ((1.5, 0.4), (4, 0.6)))
        # the ice replaces the terrain's smooth brightness (a soft maximum: no speckle where it is barely
        # brighter); a share of the fine relief shows through thin ice
        ground = ndi.gaussian_filter(out, 1.5)
        fine = rng.uniform(0.3, 1.0) * (out - ground)
        gain = 1.0
        for _ in range(5):  # the soft blend dilutes the ice: raise it until the core sits at the chosen contrast
            target = _knee(ground + 0.02 * np.logaddexp(0, ((ring + gain * contrast) * light * texture - ground) / 0.02) + fine)
            lift = np.median((out + cover * (target - out))[core]) - ring
            gain = float(np.clip(gain * contrast / max(lift, 1e-3), 1.0, 2.5))
        iced = out + cover * (target - out)
        lift = float(np.median(iced[core]) - ring)
        rows, cols = np.nonzero(core)
        extent = int(max(np.ptp(rows), np.ptp(cols)) + 1)
        if lift < 0.04 or extent > 1.3 * size + 10:  # ice kept dim by deep shade; a region that would not shrink
            continue
        out = iced
        used |= ndi.binary_dilation(cover > 0.05, iterations=3)
        patches.append((extent, lift))
    if not patches:
        return None
    return np.clip(out, 1e-4, 1).astype(np.float32), patches


def _grow(duration, used, seed, size):
    """Threshold whose connected region around the seed spans about the wanted size (bisection)."""
    lo, hi = duration[~used].min(), duration[seed]
    best, smallest = None, None
    for _ in range(14):
        t = (lo + hi) / 2
        labels, _ = ndi.label((duration > t) & ~used)
        if not labels[seed]:
            hi = t
            continue
        comp = labels == labels[seed]
        rows, cols = np.nonzero(comp)
        if max(np.ptp(rows), np.ptp(cols)) + 1 > size:
            lo = t
        else:  # components merge as the threshold falls: keep the largest that still fits
            hi = t
            if best is None or t < best[1]:
                best = (comp, t)
        smallest = smallest if smallest is not None and smallest[1] > t else (comp, t)
    return best or smallest
