"""Label values as geologists write them, and turning label geometries into training chunks."""

import collections
import contextlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from osgeo import ogr

from .chunking import check_grid_parameters, iter_chunks
from .errors import LabelError
from .gdalstate import gdal_messages
from .georeference import crs_transform
from .grid import CENTRE_FRACTION, ChunkWindow, chunk_grid, chunk_wkt, pixel_bounds_of_map_points, ring_wkt, window_ring
from .raster import RasterSource, north_up_view

ICY_WORDS = {"1", "icy", "ice", "yes", "y", "true", "t"}
NOT_ICY_WORDS = {"0", "not icy", "not_icy", "no ice", "no", "n", "false", "f", "noticy"}
# -1 is what the labelling helper writes for "unclear"; such chunks are left out, as the paper
# left out its 252 unclear chunks.
UNUSED_WORDS = {"", "-1", "unclear", "null", "none", "hard to identify", "?"}
EMPTY_WORDS = {"", "null", "none"}  # of those, the ones that say nothing (an outline left empty is ice, as drawn)
NAMES_OF_LABELS = {1: "icy", 0: "not icy"}


def says_unclear(value) -> bool:
    """Whether a label value marks its chunk unclear (-1, 'unclear', '?'), rather than saying nothing (empty)."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and np.isnan(value)):
        return False
    return str(value).strip().lower() not in EMPTY_WORDS


def parse_label(value, feature: str = "") -> Optional[int]:
    """1 (icy), 0 (not icy) or None (not used). Raises LabelError for values it cannot read, naming
    ``feature`` (e.g. "feature 12 of 'labels'") where given, so the geologist finds it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and np.isnan(value):
            return None
        if value in (0, 1):
            return int(value)
        if value == -1:
            return None
    text = str(value).strip().lower()
    if text in ICY_WORDS:
        return 1
    if text in NOT_ICY_WORDS:
        return 0
    if text in UNUSED_WORDS:
        return None
    try:  # a number written as text: "1.0" from a CSV or a table whose NULLs made the column float
        number = float(text)
    except ValueError:
        number = None
    if number is not None and number in (1, 0, -1):
        return parse_label(number, feature)
    raise LabelError(
        f"The label value {value!r}{f' ({feature})' if feature else ''} is not understood. Use 1 / 0, icy / not icy or yes / no; leave it empty (NULL), -1 or 'unclear' to leave a chunk out."
    )


@dataclass
class LabelledChunk:
    image_id: str
    window: ChunkWindow
    label: int
    image: np.ndarray  # uint8, input_size x input_size, normalised
    cells: Optional[np.ndarray] = None  # the outlined ice's share of each score-map cell (outline mode)


def _read_wkt(wkt: str, what: str) -> ogr.Geometry:
    """The geometry of a job's WKT; LabelError where GDAL cannot read it (skipped, it had trained its chunk as not icy)."""
    geometry = ogr.CreateGeometryFromWkt(wkt) if isinstance(wkt, str) else None
    if geometry is None:
        raise LabelError(f"The geometry of {what} cannot be read as WKT ({str(wkt)[:60]!r}). Write 2D WKT, or 'POLYGON Z ((...))' for 3D.")
    return geometry


def _geometries(items: Sequence[str]) -> List[ogr.Geometry]:
    """The outlines' geometries, each made valid: a hand-drawn outline often crosses itself (a bow-tie),
    and GEOS's union and intersection give nothing for such a polygon."""
    out = []
    for wkt in items:
        geometry = _read_wkt(wkt, "an outline or exclusion").GetLinearGeometry()  # a curved outline's arcs as segments: _polygonal keeps polygons
        if geometry.IsEmpty():
            continue
        geometry = _valid_polygons(geometry)
        if geometry is None:
            continue
        out.append(geometry)
    return out


def _valid_polygons(geometry: ogr.Geometry) -> Optional[ogr.Geometry]:
    """The geometry as it is where valid, else the polygons MakeValid finds in it (None if none): GEOS finds no
    union, intersection or shared area for a polygon that crosses itself."""
    with gdal_messages():  # GEOS's "Self-intersection at or near ..." is not the user's to read
        if geometry.IsValid():
            return geometry
        return _polygonal(geometry.MakeValid())


def _polygonal(*geometries: Optional[ogr.Geometry]) -> Optional[ogr.Geometry]:
    """The polygons of the geometries (of their multipolygons and collections too: MakeValid adds the
    points and lines a collapsed ring leaves) as one multipolygon; None where they hold none."""
    merged = ogr.Geometry(ogr.wkbMultiPolygon)

    def add(part):
        kind = ogr.GT_Flatten(part.GetGeometryType())
        if kind == ogr.wkbPolygon:
            merged.AddGeometry(part)
        elif kind in (ogr.wkbMultiPolygon, ogr.wkbGeometryCollection):
            for i in range(part.GetGeometryCount()):
                add(part.GetGeometryRef(i))

    for geometry in geometries:
        if geometry is not None:
            add(geometry)
    return merged if merged.GetGeometryCount() else None


def _raster_polygon(source: RasterSource) -> ogr.Geometry:
    info = source.info
    whole = ChunkWindow(0, 0, 0, 0, 0, info.width, info.height)
    return ogr.CreateGeometryFromWkt(chunk_wkt(info.geotransform, whole))


def _vertices(geometry: ogr.Geometry) -> List[Tuple[float, float]]:
    """Every vertex of a (multi)polygon's rings."""
    if geometry.GetGeometryCount():
        return [p for i in range(geometry.GetGeometryCount()) for p in _vertices(geometry.GetGeometryRef(i))]
    return [tuple(p[:2]) for p in geometry.GetPoints() or []]


def polygon_window(geometry: ogr.Geometry, geotransform, width: int, height: int, chunk_id: int = -1) -> Optional[ChunkWindow]:
    """The pixel window a label polygon covers, clipped to the raster; None if under 2 px.

    Computed from the vertices in pixel space: the map-space envelope of a chunk of a rotated
    raster is larger than the chunk (a 64-px chunk rotated 30 degrees spans ~87 px)."""
    x_min, y_min, x_max, y_max = pixel_bounds_of_map_points(geotransform, _vertices(geometry))
    x0, y0 = max(0, int(round(x_min))), max(0, int(round(y_min)))
    x1, y1 = min(width, int(round(x_max))), min(height, int(round(y_max)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return ChunkWindow(chunk_id, -1, -1, x0, y0, x1 - x0, y1 - y0)


@dataclass
class PolygonLabels:
    """The label polygons over one image read as chunk windows (``found``: (window, label)), and how many
    were left out and why, for the log: a geologist's count of labels should add up."""
    found: List[Tuple[ChunkWindow, int]]
    without_label: int = 0  # empty, -1 or 'unclear'
    off_image: int = 0
    too_small: int = 0  # under 2 px
    excluded: int = 0  # sharing area with an EXCLUDE polygon
    repeated: int = 0  # the same chunk labelled again alike: kept once
    contradictory: int = 0  # on chunks labelled both icy and not icy, or icy / not icy and unclear: left out
    split: int = 0  # parts more than features: a multipolygon's parts are each a chunk
    disputed: List[str] = field(default_factory=list)  # each chunk left out for its labels' disagreement, and whose they are

    def left_out(self) -> str:
        """"" or "; left out: ..." naming each reason with its count."""
        said = self.reasons_left_out()
        return f"; left out: {said}" if said else ""

    def reasons_left_out(self) -> str:
        """"" or each reason a label was left out with its count ("1 empty or marked unclear, 4 on 2 chunk(s) whose ...")."""
        reasons = ((self.without_label, "empty or marked unclear"), (self.off_image, "off the image or on its no-data"), (self.too_small, "under 2 px"),
                   (self.excluded, "in an exclusion polygon"), (self.repeated, "repeating a chunk labelled alike"),
                   (self.contradictory, f"on {len(self.disputed)} chunk(s) whose labels disagree (icy, not icy or unclear)"))
        return ", ".join(f"{count} {why}" for count, why in reasons if count)

    def disagreements(self, image_id: str, shown: int = 20) -> str:
        """"" or a sentence naming each chunk whose labels disagree, with the features that label it, so that two geologists'
        layers can be reconciled."""
        if not self.disputed:
            return ""
        more = f"; and {len(self.disputed) - shown} more" if len(self.disputed) > shown else ""
        return (f"{image_id}: {len(self.disputed)} chunk(s) are labelled differently by two label polygons (two geologists' layers, or two "
                f"rounds), so they are not trained on: {'; '.join(self.disputed[:shown])}{more}. Agree on one label for each, and train again.")


def _unreadable_message(items: Sequence[Dict], shown: int = 10) -> str:
    named = ", ".join(f"{item.get('label')!r}" + (f" ({item['feature']})" if item.get("feature") else "") for item in items[:shown])
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return (f"{len(items)} label value(s) are not understood: {named}{more}. Use 1 / 0, icy / not icy or yes / no; leave a chunk empty (NULL), "
            "-1 or 'unclear' to leave it out.")


def label_windows(source: RasterSource, labels: Sequence[Dict], exclude: Sequence[str] = ()) -> PolygonLabels:
    """The pixel window and label of each labelled polygon over the raster (polygon_window). Left out:
    unlabelled polygons, those off the image or under 2 px, those sharing area with an exclusion, and
    repeats: a chunk labelled twice alike counts once, one labelled both ways not at all."""
    info = source.info
    footprint = _raster_polygon(source)
    usable, unreadable, unclear = [], [], []
    for item in labels:
        try:
            label = parse_label(item.get("label"), item.get("feature", ""))
        except LabelError:
            unreadable.append(item)
            continue
        if label is not None:
            usable.append((item, label))
        elif says_unclear(item.get("label")):
            unclear.append(item)
    if unreadable:  # all of them at once: a field calculator's results had been found one per run
        raise LabelError(_unreadable_message(unreadable))
    if not usable:
        raise LabelError(f"No feature over {info.image_id} has a usable label (1/0, icy/not icy, yes/no). Fill the label field, e.g. with the labelling tools.")
    pieces = [(part, label, item) for item, label in usable for part in _label_parts(item)]
    reading = PolygonLabels([], without_label=len(labels) - len(usable), split=len(pieces) - len(usable))
    excluded = _geometries(exclude)
    by_window: Dict[Tuple[int, int, int, int], List[Tuple[int, Dict]]] = {}
    for index, (geometry, label, item) in enumerate(pieces):
        if not geometry.Intersects(footprint):
            reading.off_image += 1
            continue
        window = polygon_window(geometry, info.geotransform, info.width, info.height, index)
        if window is None:
            reading.too_small += 1
        elif any(_overlap(_valid_polygons(geometry) or geometry, shape) > 0 for shape in excluded):  # a bow-tie chunk too
            reading.excluded += 1
        else:
            key = (window.x_off, window.y_off, window.width, window.height)
            if key not in by_window:
                reading.found.append((window, label))
            by_window.setdefault(key, []).append((label, item))
    # A chunk one polygon calls unclear and another icy or not icy is disputed as much as one called both (the paper left
    # its unclear chunks out): it had been trained on as the other label said, and the disagreement went unsaid.
    doubted: Dict[Tuple[int, int, int, int], List[Dict]] = {}
    for item in unclear:
        for part in _label_parts(item):
            window = polygon_window(part, info.geotransform, info.width, info.height, 0) if part.Intersects(footprint) else None
            key = window and (window.x_off, window.y_off, window.width, window.height)
            if key in by_window:
                doubted.setdefault(key, []).append(item)
    mixed = {key for key, seen in by_window.items() if len({label for label, _ in seen}) > 1} | set(doubted)
    reading.repeated = sum(len(seen) - 1 for key, seen in by_window.items() if key not in mixed)
    reading.contradictory = sum(len(by_window[key]) for key in mixed)
    # Counted among the disputed, not as plain unclear ones: once each, though a multipolygon's parts may doubt several chunks
    doubting = len({id(item) for items in doubted.values() for item in items})
    reading.without_label -= doubting
    reading.contradictory += doubting
    for key in sorted(mixed, key=lambda k: (k[1], k[0])):
        said = [f"{item.get('feature') or 'a polygon'} {NAMES_OF_LABELS[label]}" for label, item in by_window[key]]
        said += [f"{item.get('feature') or 'a polygon'} unclear" for item in doubted.get(key, [])]
        reading.disputed.append(f"the chunk at pixel x {key[0]}, y {key[1]} ({', '.join(said)})")
    reading.found = [(window, label) for window, label in reading.found if (window.x_off, window.y_off, window.width, window.height) not in mixed]
    if not reading.found:
        raise LabelError(_no_chunk_message(info.image_id, len(pieces), reading))
    return reading


def _label_parts(item: Dict) -> List[ogr.Geometry]:
    """A chunk label's polygons: a multipolygon's parts each on its own (its bounding window had held, and
    labelled, the chunks between them), arcs as segments (a circle's window had come from its control
    points, all on one line)."""
    geometry = _read_wkt(item["wkt"], item.get("feature") or "a label").GetLinearGeometry()
    if ogr.GT_Flatten(geometry.GetGeometryType()) == ogr.wkbMultiPolygon and geometry.GetGeometryCount() > 1:
        return [geometry.GetGeometryRef(i).Clone() for i in range(geometry.GetGeometryCount())]
    return [geometry]


def _no_chunk_message(image_id: str, usable: int, reading: PolygonLabels) -> str:
    if reading.too_small == usable:
        return (f"All {usable} labelled polygons over {image_id} are under 2 px across, too small to be chunks. With the label layers "
                "holding chunk polygons (LABEL_MODE=0) each polygon is one chunk, such as a detect output's; for outlines drawn around "
                "ice patches choose LABEL_MODE=1 (ice-patch outlines).")
    if reading.excluded and reading.excluded + reading.off_image + reading.too_small == usable:
        return f"Every labelled polygon over {image_id} lies in an exclusion polygon (EXCLUDE){reading.left_out()}. Leave those chunks out of EXCLUDE, or give other labels."
    if reading.contradictory and not (reading.off_image or reading.too_small or reading.excluded):
        return f"Every chunk labelled over {image_id} has labels that disagree{reading.left_out()}. {reading.disagreements(image_id)}"
    return (f"None of the {usable} labelled polygons lies on image data of {image_id}{reading.left_out()}. Check that the label layer belongs to this raster "
            "(its CRS and extent) and that the polygons are not on the no-data border.")


@contextlib.contextmanager
def north_up_rasters(rasters: Sequence[Dict], log) -> Iterator[List[Dict]]:
    """A job's rasters as detect reads them: one whose north turns far from up through its north-up
    view (raster.north_up_view), its label polygons and exclusions carried into the view's map. So the
    chunks of a detect on such an image, labelled, are read back as the very windows detect scored."""
    with contextlib.ExitStack() as stack:
        entries = []
        for entry in rasters:
            view = stack.enter_context(north_up_view(entry["path"], int(entry.get("band", 0)), log))
            if view != entry["path"]:
                with RasterSource(entry["path"], int(entry.get("band", 0))) as stored, RasterSource(view) as seen:
                    carry = map_carrier(stored.info.crs_wkt, seen.info.crs_wkt)
                entry = dict(entry, path=view, labels=[dict(item, wkt=carry(item["wkt"])) for item in entry.get("labels", [])],
                             exclude=[carry(wkt) for wkt in entry.get("exclude", [])])
            entries.append(entry)
        yield entries


def map_carrier(from_wkt: str, to_wkt: str):
    """WKT in one CRS -> the same geometry's WKT in another."""
    transform = crs_transform(from_wkt, to_wkt)

    def carry(wkt: str) -> str:
        geometry = ogr.CreateGeometryFromWkt(wkt)
        if geometry is None:  # left for the label checks to name
            return wkt
        geometry.Transform(transform)
        return geometry.ExportToWkt()

    return carry


def typical_side(windows: Sequence[ChunkWindow]) -> int:
    """The most common longer side of label windows: the chunk size a detect output was made at
    (its edge chunks are smaller; ties go to the larger size)."""
    return most_common_side([max(w.width, w.height) for w in windows])


def most_common_side(sides: Sequence[int]) -> int:
    values, counts = np.unique(sides, return_counts=True)
    return int(values[counts == counts.max()].max())


def label_window_sides(rasters: Sequence[Dict]) -> List[int]:
    """The longer side, in pixels, of each label polygon's window over a job's rasters."""
    sides = []
    for entry in rasters:
        if entry.get("labels"):
            with RasterSource(entry["path"], int(entry.get("band", 0))) as source:
                sides.extend(max(window.width, window.height) for window, _ in label_windows(source, entry["labels"], entry.get("exclude", ())).found)
    return sides


# Label polygons smaller than this share of the network's input, their size taken as the chunk size, are
# taken for outlines given in the wrong mode: each pixel would fill four input pixels or more.
SMALLEST_LABEL_SHARE = 0.25


def tuned_chunk_size(given: int, label_sides: Sequence[int], base_chunk_size: Optional[int], default: int, reporter, input_size: int = 0) -> int:
    """The chunk size to train at: CHUNK_SIZE when given (> 0), else the label polygons' size (the most
    common of ``label_sides``), else the base model's, else the default; logs it, where it came from,
    and what happens when labels or base model differ from it, and warns of label polygons larger than
    it among others that are not (two rounds' layers made at two chunk sizes). Label polygons far smaller
    than the input (SMALLEST_LABEL_SHARE), with no CHUNK_SIZE given, are refused: outlines drawn
    around ice, given as chunks."""
    label_side = most_common_side(label_sides) if len(label_sides) else None
    if not given and label_side and label_side < SMALLEST_LABEL_SHARE * input_size:
        raise LabelError(
            f"The label polygons are {label_side} px across, too small to be chunks: the network would read each at its {input_size}-px input. "
            "With the label layers holding chunk polygons (LABEL_MODE=0) each polygon is one chunk, such as a detect output's; for outlines "
            "drawn around ice patches choose LABEL_MODE=1 (ice-patch outlines), or set CHUNK_SIZE to train at chunks this small all the same."
        )
    size = given or label_side or base_chunk_size or default
    source = "CHUNK_SIZE" if given else "the label polygons' size" if label_side else "the base model's" if base_chunk_size else "the default"
    check_grid_parameters(size, size, 0.0)
    notes = [f"training at {size}-px chunks ({source})"]
    if label_side and label_side != size:
        how = (f"each is read as detect reads a {label_side}-px edge of a {size}-px chunk (the rest of the input is no-data)" if label_side < size
               else f"each is read whole and shrunk to the input, coarser than detect's {size}-px chunks")
        notes.append(f"labels are {label_side}-px chunks but CHUNK_SIZE is {size}: {how}; set CHUNK_SIZE to {label_side} (or 0) to train at the labels' size")
    if base_chunk_size and base_chunk_size != size:
        notes.append(f"the model was trained at {base_chunk_size} px; it is tuned at {size} px and records chunk_size {size}, so detect uses {size} by default")
    reporter.log("; ".join(notes))
    larger = collections.Counter(side for side in label_sides if side > size)
    if larger and label_side <= size:  # a whole layer larger is the note above's
        listed = ", ".join(f"{count} of {side} px" for side, count in sorted(larger.items()))
        reporter.warning(
            f"{sum(larger.values())} of the {len(label_sides)} label polygons are larger than the {size}-px chunks trained at ({listed}): each is read "
            f"whole and shrunk to the network's input, the ground coarser than detect reads it at {size} px, and the validation chunks among them "
            "judge the model at that scale too. Give label layers made at one chunk size, or train on the others apart with CHUNK_SIZE set to theirs."
        )
    return size


def chunks_from_polygons(source: RasterSource, labels: Sequence[Dict], chunk_size: int, input_size: int, normalisation: Dict, exclude: Sequence[str] = (),
                         log: Callable[[str], None] = None, warn: Callable[[str], None] = None) -> List[LabelledChunk]:
    """The chunks of polygon_chunks, without the account of those left out."""
    return polygon_chunks(source, labels, chunk_size, input_size, normalisation, exclude, log, warn)[0]


def polygon_chunks(source: RasterSource, labels: Sequence[Dict], chunk_size: int, input_size: int, normalisation: Dict, exclude: Sequence[str] = (),
                   log: Callable[[str], None] = None, warn: Callable[[str], None] = None) -> Tuple[List[LabelledChunk], PolygonLabels]:
    """Mode (a): each labelled polygon (e.g. a filled detect output) is one chunk, read at its pixel
    footprint exactly as detect reads a chunk of chunk_size: a polygon of chunk_size px fills the input,
    a smaller one (an edge chunk) keeps the scale and is padded with no-data. Those sharing area with an
    ``exclude`` polygon are left out; ``log`` hears what was left out and why (PolygonLabels), ``warn`` which chunks' labels disagree.
    Returns the chunks and that account, which the training report keeps."""
    from .preprocess import normalise, to_uint8

    info = source.info
    samples = []
    reading = label_windows(source, labels, exclude)
    for window, label in reading.found:
        # A polygon larger than a chunk is read whole, shrunk to the network's input.
        data, valid = source.read_chunk(window, max(chunk_size, window.width, window.height), input_size)
        if not valid.any():
            reading.off_image += 1
            continue
        samples.append(LabelledChunk(info.image_id, window, label, to_uint8(normalise(data, valid, normalisation))))
    if not samples:
        raise LabelError(_no_chunk_message(info.image_id, len(labels) - reading.without_label + reading.split, reading))
    if log is not None and reading.left_out():
        log(f"{info.image_id}: {len(labels)} label polygons{reading.left_out()}")
    if warn is not None and reading.disputed:
        warn(reading.disagreements(info.image_id))
    if log is not None and reading.split:
        log(f"{info.image_id}: multipart label polygons read as one chunk per part ({reading.split} more chunks than features)")
    return samples, reading


def _overlaps(a: ChunkWindow, b: ChunkWindow) -> bool:
    return a.x_off < b.x_off + b.width and b.x_off < a.x_off + a.width and a.y_off < b.y_off + b.height and b.y_off < a.y_off + a.height


def unlabelled_chunks(source: RasterSource, labelled: Sequence[ChunkWindow], chunk_size: int, input_size: int, min_valid: float, normalisation: Dict,
                      count: int, rng: np.random.Generator) -> List[np.ndarray]:
    """Up to ``count`` grid chunks of the image that no labelled window overlaps, drawn at random
    and read as detect reads them (uint8 inputs): the image's own terrain, which a survey of it
    is mostly made of, for fine-tuning to keep the base model's answers on (finetune.py)."""
    from .preprocess import normalise, to_uint8, valid_fractions

    info = source.info
    candidates = [w for w in chunk_grid(info.width, info.height, chunk_size, chunk_size) if not any(_overlaps(w, l) for l in labelled)]
    images = []
    for index in rng.permutation(len(candidates)):
        if len(images) >= count:
            break
        window = candidates[index]
        data, valid = source.read_chunk(window, chunk_size, input_size)
        whole, centre = valid_fractions(valid, window.scaled_size(chunk_size, input_size)[::-1], CENTRE_FRACTION)
        if centre >= min_valid and whole > 0:
            images.append(to_uint8(normalise(data, valid, normalisation)))
    return images


def _union(shapes: Sequence[ogr.Geometry]) -> ogr.Geometry:
    """One 2-D multipolygon of the polygons among ``shapes`` (OGR's cascaded union)."""
    flat = [shape.Clone() for shape in shapes]
    for shape in flat:
        shape.FlattenTo2D()
    merged = _polygonal(*flat)
    return merged.UnionCascaded() if merged is not None else ogr.Geometry(ogr.wkbMultiPolygon)


def _overlap(polygon: ogr.Geometry, shape: ogr.Geometry) -> float:
    """The area the two share; 0 where they only touch along an edge or at a corner."""
    if not polygon.Intersects(shape):
        return 0.0
    common = polygon.Intersection(shape)
    return common.GetArea() if common is not None and common.GetDimension() == 2 else 0.0


def outlined_cells(geotransform, window: ChunkWindow, chunk_size: int, cells: int, ice: ogr.Geometry) -> np.ndarray:
    """(cells, cells): the share of each score-map cell of this chunk that the ice outlines cover.
    The cells divide the whole chunk_size square from the window's corner, as the network's input
    holds an edge chunk padded to its size."""
    side = chunk_size / cells
    shares = np.zeros((cells, cells), np.float32)
    for row in range(cells):
        for col in range(cells):
            cell = ogr.CreateGeometryFromWkt(ring_wkt(window_ring(geotransform, window.x_off + col * side, window.y_off + row * side, side, side)))
            shares[row, col] = _overlap(cell, ice) / cell.GetArea()
    return shares


def chunks_from_outlines(source: RasterSource, outlines: Sequence[Dict], exclude: Sequence[str], chunk_size: int, input_size: int, min_valid: float, normalisation: Dict,
                         cells: int = 0) -> List[LabelledChunk]:
    """Mode (b): grid chunks sharing area with an ice-patch outline are icy, the others not icy; chunks sharing area with EXCLUDE
    polygons are left out. An outline's label may say otherwise: empty (NULL) is ice, as drawn; 0 is no ice; -1 or 'unclear'
    leaves the chunks it covers out, as an exclusion does. With ``cells``, each chunk also carries
    where the outlines lie (outlined_cells)."""
    from .preprocess import normalise, to_uint8

    info = source.info
    icy_shapes, unclear = [], []
    for item in outlines:
        value = item.get("label")
        label = 1 if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip().lower() in EMPTY_WORDS else parse_label(value, item.get("feature", ""))
        if label == 0:
            continue  # an outline marked "not icy" is no ice patch
        (icy_shapes if label else unclear).append(item["wkt"])
    icy_shapes = _geometries(icy_shapes)
    footprint = _raster_polygon(source)
    if icy_shapes and not any(g.Intersects(footprint) for g in icy_shapes):
        raise LabelError(f"None of the ice-patch outlines lies within {info.image_id}. Check the label layer's CRS and that it belongs to this raster.")
    excluded = _geometries(list(exclude) + unclear)
    ice = _union(icy_shapes) if cells else None
    samples = []
    for sample in iter_chunks(source, chunk_size, chunk_size, min_valid, input_size):
        polygon = ogr.CreateGeometryFromWkt(chunk_wkt(info.geotransform, sample.window))
        if any(_overlap(polygon, g) > 0 for g in excluded):  # sharing area, as in chunk mode: not its neighbours that touch it
            continue
        label = int(any(_overlap(polygon, g) > 0 for g in icy_shapes))  # an outline that only touches the chunk's edge is the next chunk's ice
        shares = None
        if cells:
            shares = outlined_cells(info.geotransform, sample.window, chunk_size, cells, ice.Intersection(polygon)) if label else np.zeros((cells, cells), np.float32)
        samples.append(LabelledChunk(info.image_id, sample.window, label, to_uint8(normalise(sample.data, sample.valid, normalisation)), shares))
    return samples
