"""HiRISE PDS3 labels: the detached ``.LBL`` that the PDS archive ships beside every RDR.

Only what the summary needs is read: the observation ID, the DN-to-I/F scaling, the special DNs,
and the viewing geometry (solar longitude Ls, incidence angle, latitude). The label's
CENTER_LATITUDE belongs to the map projection (90 for a polar stereographic product), so the
image's own centre latitude is the middle of its MINIMUM_LATITUDE and MAXIMUM_LATITUDE.
Saturated DNs are reported, not masked: saturated bright pixels may be the ice itself.
"""

import os
import re
from typing import Dict, List, Optional, Tuple

LABEL_SUFFIXES = (".LBL", ".lbl")

# KEY = VALUE, where VALUE is a quoted string or a (list), both possibly over several lines, or the rest of the line.
# Bounded, so that an unclosed quote or bracket is not sought to the end of the file from every line.
_STATEMENT = re.compile(r'^[ \t]*([A-Z0-9_:^]+)[ \t]*=[ \t]*("[^"]{0,8192}"|\([^)]{0,8192}\)|[^\r\n]*)', re.M)
# A HiRISE RDR's label is about 10 kB; a file many times that is no label, and is not read.
LABEL_MAX_BYTES = 256 * 1024
_NUMBER = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\s*<[^>]*>)?$")

Statement = Tuple[Tuple[str, ...], str, str]  # (enclosing OBJECT/GROUP names, keyword, raw value)


def label_beside(raster_path: str) -> Optional[str]:
    """The label of the same stem beside the raster (the raster itself when it is the label)."""
    if raster_path.endswith(LABEL_SUFFIXES):
        return raster_path
    stem = os.path.splitext(raster_path)[0]
    for suffix in LABEL_SUFFIXES:
        if os.path.isfile(stem + suffix):
            return stem + suffix
    return None


def map_projected_label_beside(raster_path: str) -> Optional[str]:
    """The PDS label beside a raster (not the raster itself) that holds a map projection: what GDAL reads
    a HiRISE RDR's georeferencing from when its JP2 carries none."""
    label = label_beside(raster_path)
    if label is None or label == raster_path:
        return None
    return label if "IMAGE_MAP_PROJECTION" in without_comments(_head(label)) else None


# An ISIS3 cube's label opens with this object; a detached one points at the cube's pixels by ^Core.
_ISIS3_LABEL = re.compile(r"^\s*Object\s*=\s*IsisCube\b", re.IGNORECASE | re.MULTILINE)
_ISIS3_CORE = re.compile(r"^\s*\^Core\s*=\s*\"?([^\"\r\n]+?)\"?\s*$", re.IGNORECASE | re.MULTILINE)


def pixels_label(path: str) -> Optional[str]:
    """The detached label through which alone GDAL reads an image's raw pixels: a PDS3 image's (.IMG),
    or an ISIS3 cube's whose label names it as its ^Core; None for any other file."""
    if path.lower().endswith(".img"):
        return label_beside(path)
    if path.lower().endswith(".cub"):
        label = label_beside(path)
        text = _head(label) if label else ""
        core = _ISIS3_CORE.search(text) if _ISIS3_LABEL.search(text) else None
        return label if core and os.path.basename(core.group(1).strip()) == os.path.basename(path) else None
    return None


def is_isis3_label(path: str) -> bool:
    """Whether the file is an ISIS3 cube's label (attached or detached), which holds none of a PDS3 label's keywords."""
    return bool(_ISIS3_LABEL.search(_head(path)))


def _head(path: str) -> str:
    """The first LABEL_MAX_BYTES of a file as text ('' where it cannot be read): a label, or a cube's attached one."""
    try:
        with open(path, "rb") as handle:
            return handle.read(LABEL_MAX_BYTES).decode("latin-1")
    except OSError:
        return ""


def without_comments(text: str) -> str:
    """The text without its /* ... */ comments (one left open runs to the end), in one pass: a regular
    expression sought the end of every comment left open to the end of the file, for hours on a large one."""
    kept, start = [], 0
    while True:
        opening = text.find("/*", start)
        if opening < 0:
            return "".join(kept) + text[start:]
        kept.append(text[start:opening])
        closing = text.find("*/", opening + 2)
        if closing < 0:
            return "".join(kept)
        start = closing + 2


def parse(text: str) -> List[Statement]:
    """Every keyword of a PDS3 label with the OBJECT/GROUP path it sits in."""
    path: List[str] = []
    statements: List[Statement] = []
    for match in _STATEMENT.finditer(without_comments(text)):
        key, value = match.group(1), match.group(2).strip()
        if key in ("OBJECT", "GROUP"):
            path.append(value)
        elif key in ("END_OBJECT", "END_GROUP"):
            if path:
                path.pop()
        else:
            statements.append((tuple(path), key, value))
    return statements


def _value(statements: List[Statement], key: str, within: str = ""):
    """The first `key` (inside an OBJECT or GROUP named `within` when given): a float for a number
    with or without its <UNIT>, else the text without quotes; None when absent."""
    for path, name, raw in statements:
        if name == key and (not within or within in path):
            number = _NUMBER.match(raw)
            return float(number.group(1)) if number else raw.strip('"').strip()
    return None


def _number(statements: List[Statement], key: str, within: str = "") -> Optional[float]:
    value = _value(statements, key, within)
    return value if isinstance(value, float) else None


def _integer(value: Optional[float]) -> Optional[int]:
    return None if value is None else int(round(value))


def summary_fields(label_path: str) -> Dict:
    """The summary's label fields (model/schema.py LABEL_SUMMARY_FIELDS); None for what the label lacks."""
    size = os.path.getsize(label_path)
    if size > LABEL_MAX_BYTES:
        raise OSError(f"it is {size:,} bytes, where a HiRISE label is about 10 kB: not a label")
    with open(label_path, encoding="latin-1") as handle:
        statements = parse(handle.read())
    low = [v for v in (_number(statements, k, "IMAGE") for k in ("CORE_LOW_REPR_SATURATION", "CORE_LOW_INSTR_SATURATION")) if v is not None]
    high = [v for v in (_number(statements, k, "IMAGE") for k in ("CORE_HIGH_REPR_SATURATION", "CORE_HIGH_INSTR_SATURATION")) if v is not None]
    latitudes = [_number(statements, k, "IMAGE_MAP_PROJECTION") for k in ("MINIMUM_LATITUDE", "MAXIMUM_LATITUDE")]
    observation = _value(statements, "OBSERVATION_ID")
    return {
        "observation_id": observation if isinstance(observation, str) else None,
        "solar_longitude": _number(statements, "SOLAR_LONGITUDE"),
        "incidence_angle": _number(statements, "INCIDENCE_ANGLE"),
        "centre_latitude": None if None in latitudes else round((latitudes[0] + latitudes[1]) / 2.0, 6),
        "scaling_factor": _number(statements, "SCALING_FACTOR", "IMAGE"),
        "scaling_offset": _number(statements, "OFFSET", "IMAGE"),
        "nodata_dn": _integer(_number(statements, "CORE_NULL", "IMAGE")),
        "low_saturation_dn": _integer(max(low)) if low else None,  # DNs at or below it are saturated
        "high_saturation_dn": _integer(min(high)) if high else None,  # DNs at or above it are saturated
    }


# What a HiRISE label's angles can be; a value outside is a damaged or hand-edited label, not the image's.
PLAUSIBLE = {"solar_longitude": (0.0, 360.0), "incidence_angle": (0.0, 180.0), "centre_latitude": (-90.0, 90.0)}


def implausible(fields: Dict) -> List[str]:
    """The summary fields (of summary_fields) whose value no HiRISE observation can have."""
    return [name for name, (low, high) in PLAUSIBLE.items() if fields.get(name) is not None and not low <= fields[name] <= high]
