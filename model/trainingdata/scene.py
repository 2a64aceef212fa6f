"""A georeferenced HiRISE-like sample scene with ice patches and look-alikes in known chunks."""

import contextlib
import math
import os
from typing import Dict, Optional

import numpy as np

from .ice.rendered_caster import implant_ice_patches
from .imaging import DEFAULT_SUN_AZIMUTH_DEG
from .lookalikes.bare_casters import implant_shadowing_features
from .lookalikes.hot_pixels import implant_hot_pixels
from .lookalikes.sunlit_rocks import implant_sunlit_bright_rocks
from .terrain import Terrain

MARS_RADIUS_M = 3396190.0
HIRISE_MAX_DN = 1023  # RED RDRs hold 10-bit data in UInt16
NODATA_DN = 0


def mars_equirectangular_wkt(latitude_deg: float, centre_lon_deg: float = 0.0) -> str:
    """WKT of a HiRISE-RDR-like Mars equirectangular CRS: sphere of radius 3396190 m,
    standard parallel at ``latitude_deg``, central meridian ``centre_lon_deg``."""
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.SetGeogCS("GCS_Mars_2000_Sphere", "D_Mars_2000_Sphere", "Mars_2000_Sphere_IAU_IAG",
                  MARS_RADIUS_M, 0.0, "Reference_Meridian", 0.0)
    srs.SetEquirectangular2(0.0, float(centre_lon_deg), float(latitude_deg), 0.0, 0.0)
    srs.SetProjCS("Equirectangular Mars")
    srs.SetLinearUnits("metre", 1.0)
    return srs.ExportToWkt()


def scene_geotransform(width: int, height: int, pixel_size_m: float, latitude_deg: float):
    """North-up geotransform of a scene centred on ``latitude_deg`` (and the CRS's central meridian)."""
    y_centre = MARS_RADIUS_M * math.radians(latitude_deg)
    return (-width / 2.0 * pixel_size_m, float(pixel_size_m), 0.0, y_centre + height / 2.0 * pixel_size_m, 0.0,
            -float(pixel_size_m))


@contextlib.contextmanager
def mars_scene_raster(path, width: int, height: int, *, pixel_size_m: float, latitude_deg: float, centre_lon_deg: float = 0.0,
                      metadata: Optional[Dict[str, str]] = None):
    """Yield a new tiled DEFLATE UInt16 GeoTIFF (nodata DN 0) in a Mars equirectangular CRS centred on
    ``latitude_deg``; when the block ends it gets average overviews and only then becomes ``path``
    (an error leaves no file)."""
    from osgeo import gdal

    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".%s.partial.tif" % os.path.basename(path))
    ds = gdal.GetDriverByName("GTiff").Create(
        tmp, width, height, 1, gdal.GDT_UInt16,
        ["TILED=YES", "BLOCKXSIZE=512", "BLOCKYSIZE=512", "COMPRESS=DEFLATE", "PREDICTOR=2", "ZLEVEL=4",
         "NUM_THREADS=ALL_CPUS", "BIGTIFF=IF_SAFER"])
    if ds is None:
        raise OSError("cannot create %s: %s" % (tmp, gdal.GetLastErrorMsg()))
    try:
        ds.SetGeoTransform(scene_geotransform(width, height, pixel_size_m, latitude_deg))
        ds.SetProjection(mars_equirectangular_wkt(latitude_deg, centre_lon_deg))
        ds.SetMetadata(metadata or {})
        band = ds.GetRasterBand(1)
        band.SetNoDataValue(NODATA_DN)
        band.SetDescription("RED")
        yield ds
        levels = []
        factor = 2
        while min(width, height) // factor >= 128:
            levels.append(factor)
            factor *= 2
        if levels:
            old_threads = gdal.GetConfigOption("GDAL_NUM_THREADS")
            gdal.SetConfigOption("GDAL_NUM_THREADS", old_threads or "ALL_CPUS")
            try:
                ds.BuildOverviews("AVERAGE", levels)
            finally:
                gdal.SetConfigOption("GDAL_NUM_THREADS", old_threads)
        ds.FlushCache()
        ds = None
        os.replace(tmp, path)
    except BaseException:
        ds = None
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _footprint_params(width: int, height: int, angle_deg: float):
    """Rotated swath rectangle whose corners touch the four raster edges."""
    th = math.radians(angle_deg)
    c, s = math.cos(th), math.sin(th)
    ca, sa = c, abs(s)
    den = ca * ca - sa * sa
    a = (width * ca - height * sa) / den  # swath width
    b = (height * ca - width * sa) / den  # swath length
    if a <= 0 or b <= 0:
        raise ValueError("footprint rotation %.1f deg is too large for a %dx%d raster" % (angle_deg, width, height))
    return a, b, c, s


def footprint_mask(r0: int, r1: int, width: int, height: int, angle_deg: float, c0: int = 0,
                    c1: Optional[int] = None) -> np.ndarray:
    """True inside the swath footprint, for rows r0:r1 and columns c0:c1 of the raster."""
    a, b, c, s = _footprint_params(width, height, angle_deg)
    y = (np.arange(r0, r1, dtype=np.float32) + 0.5 - height / 2.0)[:, None]
    x = (np.arange(c0, width if c1 is None else c1, dtype=np.float32) + 0.5 - width / 2.0)[None, :]
    u = x * c + y * s
    v = -x * s + y * c
    return (np.abs(u) <= a / 2.0) & (np.abs(v) <= b / 2.0)


def write_sample_scene(path, width=4096, height=3072, rng_seed=0, pixel_size_m=0.25, latitude_deg=-55.0, ice=True,
                       *, chunk_size=1024, sun_azimuth_deg=DEFAULT_SUN_AZIMUTH_DEG, centre_lon_deg=0.0) -> Dict:
    """Write a georeferenced HiRISE-like RED GeoTIFF and describe what is in it.

    UInt16 holding 10-bit DN (1..1023), DN 0 = no-data (set as the band's nodata) outside a
    slightly rotated swath footprint, tiled + DEFLATE, with internal overviews; Mars
    equirectangular CRS (custom WKT, standard parallel = ``latitude_deg``). Written one
    ``chunk_size``-row strip at a time. With ``ice`` roughly half the ``chunk_size`` chunks
    (grid from pixel (0, 0), chunk id = row * columns + col) whose centre is inside the
    footprint get 1-3 ice patches; the other chunks get look-alikes instead: bare shadowing
    landforms (no ice), a few hot pixels and sunlit rocks.

    Returns a dict: ``path``, ``width``, ``height``, ``size`` (width, height),
    ``geotransform``, ``crs_wkt``, ``nodata``, ``pixel_size_m``, ``latitude_deg``,
    ``chunk_size``, ``ice_chunks`` (chunk ids), ``ice_patches`` (one dict per patch:
    ``bbox`` = (x0, y0, x1, y1) raster pixel columns/rows, ends exclusive, ``centre`` (x, y),
    ``chunk`` (row, col), ``chunk_id``, ``contrast``), ``negative_chunks``, ``seconds``.
    """
    import time

    t_start = time.time()
    width, height, chunk_size = int(width), int(height), int(chunk_size)
    if width < 64 or height < 64:
        raise ValueError("scene must be at least 64x64 pixels")
    rng = np.random.default_rng(rng_seed)
    scale = max(1.0, chunk_size / 256.0)
    terrain = Terrain(height, width, rng, scale=scale, sun_azimuth_deg=sun_azimuth_deg,
                       sun_elevation_deg=rng.uniform(22.0, 38.0))
    angle = float(rng.uniform(2.0, 5.0)) * (1 if rng.random() < 0.5 else -1)
    ncr, ncc = -(-height // chunk_size), -(-width // chunk_size)
    # chunks whose central half is inside the footprint can hold ice
    eligible = []
    for cr in range(ncr):
        for cc in range(ncc):
            y0, x0 = cr * chunk_size, cc * chunk_size
            ch, cw = min(chunk_size, height - y0), min(chunk_size, width - x0)
            if ch < 64 or cw < 64:
                continue
            fm = footprint_mask(y0 + ch // 4, y0 + ch - ch // 4, width, height, angle, x0 + cw // 4, x0 + cw - cw // 4)
            if fm.all():
                eligible.append(cr * ncc + cc)
    ice_chunks = set()
    if ice and eligible:
        k = max(1, int(round(ncr * ncc / 2.0)))
        ice_chunks = set(int(i) for i in rng.permutation(eligible)[:k])

    patches = []
    negatives = []
    metadata = {"SYNTHETIC": "YES", "INSTRUMENT": "HiRISE-like RED (synthetic)", "SUN_AZIMUTH_DEG": "%.1f" % sun_azimuth_deg,
                "SUN_ELEVATION_DEG": "%.1f" % terrain.sun_el, "LATITUDE_DEG": "%.3f" % latitude_deg, "RNG_SEED": str(rng_seed)}
    with mars_scene_raster(path, width, height, pixel_size_m=pixel_size_m, latitude_deg=latitude_deg,
                           centre_lon_deg=centre_lon_deg, metadata=metadata) as ds:
        band = ds.GetRasterBand(1)
        for cr in range(ncr):
            r0 = cr * chunk_size
            r1 = min(height, r0 + chunk_size)
            img = terrain.render(r0, r1, 0, width)
            valid = footprint_mask(r0, r1, width, height, angle)
            for cc in range(ncc):
                c0 = cc * chunk_size
                c1 = min(width, c0 + chunk_size)
                cid = cr * ncc + cc
                sub, v = img[:, c0:c1], valid[:, c0:c1]
                if v.sum() < 64 * 64:
                    continue
                crng = np.random.default_rng([int(rng_seed) & 0xFFFFFFFF, cr, cc, 7])
                if cid in ice_chunks:
                    new, _m, infos = implant_ice_patches(
                        sub, crng, count=int(crng.integers(1, 4)), sun_azimuth_deg=sun_azimuth_deg,
                        min_size_px=max(3, chunk_size // 40), max_size_fraction=1.0 / 3.0,
                        contrast_range=(0.05, 0.3), sun_elevation_deg=terrain.sun_el, valid=v, return_info=True)
                    for inf in infos:
                        br0, bc0, br1, bc1 = inf["bbox"]
                        patches.append({
                            "bbox": (c0 + bc0, r0 + br0, c0 + bc1, r0 + br1),
                            "centre": (c0 + inf["centre"][1], r0 + inf["centre"][0]),
                            "chunk": (cr, cc), "chunk_id": cid, "contrast": inf["contrast"],
                            "size_px": inf["size_px"],
                        })
                else:
                    new, _m = implant_shadowing_features(
                        sub, crng, count=int(crng.integers(0, 3)), sun_azimuth_deg=sun_azimuth_deg,
                        size_range_px=(chunk_size / 40.0, chunk_size / 3.0), sun_elevation_deg=terrain.sun_el, valid=v)
                    new, _m = implant_hot_pixels(new, crng, count=int(crng.integers(1, 5)), valid=v)
                    new, _m = implant_sunlit_bright_rocks(
                        new, crng, count=int(crng.integers(1, 4)), sun_azimuth_deg=sun_azimuth_deg,
                        size_range_px=(2.0 * scale, 12.0 * scale), sun_elevation_deg=terrain.sun_el, valid=v)
                    negatives.append(cid)
                img[:, c0:c1] = new
            dn = np.clip(np.rint(img * HIRISE_MAX_DN), 1, HIRISE_MAX_DN).astype(np.uint16)
            dn[~valid] = NODATA_DN
            del img, valid
            band.WriteArray(dn, 0, r0)
            ds.FlushCache()  # compress and write this strip now: memory stays at one strip
    return {
        "path": os.fspath(path), "width": width, "height": height, "size": (width, height),
        "geotransform": scene_geotransform(width, height, pixel_size_m, latitude_deg),
        "crs_wkt": mars_equirectangular_wkt(latitude_deg, centre_lon_deg), "nodata": NODATA_DN, "pixel_size_m": float(pixel_size_m), "latitude_deg": float(latitude_deg),
        "chunk_size": chunk_size, "ice_chunks": sorted(ice_chunks), "ice_patches": patches,
        "negative_chunks": sorted(negatives), "footprint_angle_deg": angle, "seconds": time.time() - t_start,
    }
