"""Which way north points in an image, and how far the network may see it turned.

Pure Python: the raster reader finds north from a file's CRS (georeference.north_turn), the catalog from
where a product lies (HiRISE's map rule), before anything is downloaded.

The network reads where shade and ice lie from the sun's side: ice on the lower, poleward side of
what shades it, as in the north-up maps its real terrain came from. A file turned further than
NORTH_WARNED_DEG is warned about; one turned further than NORTH_FAR_DEG (a polar stereographic product
away from its central meridian, a file stored south-up) detect and training read through a north-up
view of it (raster.north_up_view).
"""

NORTH_WARNED_DEG = 15.0
NORTH_FAR_DEG = 45.0

# HiRISE maps a product centred poleward of 65 deg in polar stereographic on the 0 meridian, the others
# in equirectangular, north up.
POLAR_MAP_LATITUDE = 65.0


def hirise_north_turn(latitude: float, longitude: float) -> float:
    """Degrees clockwise from up that north points at a HiRISE map product's centre (latitude and east
    longitude of that centre): the longitude itself, signed, in a south polar map; its opposite in a
    north polar one; 0 in an equirectangular one. The cumulative index's NORTH_AZIMUTH minus 270."""
    if abs(latitude) <= POLAR_MAP_LATITUDE:
        return 0.0
    signed = (longitude + 180.0) % 360.0 - 180.0
    return signed if latitude < 0 else -signed
