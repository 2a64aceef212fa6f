"""Where the algorithms' outputs land on disk, checked before the worker starts: writable, with
room, not replacing another output or a file the run reads; read back once written, and removed
when a run fails."""

import contextlib
import os
import re
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from osgeo import gdal
from qgis.core import QgsDataSourceUri, QgsProcessingException, QgsProcessingUtils, QgsProviderRegistry, QgsVectorFileWriter
from qgis.PyQt.QtCore import QFileInfo

from .engine import files, gdal_exceptions, schema, surveystore


# How long a GeoPackage's lock may last before the output is refused: another program's brief write passes.
LOCK_WAIT_S = 2.0


@dataclass(frozen=True)
class FileDestination:
    parameter: str
    path: str  # absolute
    table: str = ""  # empty: a plain file name, which QGIS replaces as a whole
    existed: bool = False  # the file was there before this run


def file_destination(parameter: str, destination: str, vector: bool = False) -> Optional[FileDestination]:
    """Where a sink or file destination writes on disk; None for memory and database outputs.
    vector: a feature sink, which QGIS writes to name + ".gpkg" where the name ends in no vector
    format's extension (QgsProcessingUtils::parseDestinationString): "chunks", or the input's "scene.tif"."""
    if not destination or destination == "TEMPORARY_OUTPUT":
        return None
    if destination.startswith("ogr:"):
        uri = QgsDataSourceUri(destination[len("ogr:"):])
        path = os.path.abspath(uri.database() or destination[len("ogr:"):])  # ogr:PATH, without dbname=, is the file itself
        known_format = QgsVectorFileWriter.driverForExtension(os.path.splitext(path)[1].lstrip("."))
        if not known_format and not uri.database():
            raise QgsProcessingException(f"{parameter} is the address {destination!r}, whose file '{path}' has no vector format's extension: "
                                         "give it one (e.g. .gpkg); nothing was run.")
        if not known_format:
            # QGIS reads dbname='...' up to its first unescaped apostrophe: O'Neil/ice.gpkg is read as O
            raise QgsProcessingException(
                f"{parameter} is the address {destination!r}, whose file QGIS reads as '{path}', without a vector format's extension. "
                "An apostrophe inside dbname='...' must be written \\' (dbname='/data/O\\'Neil/ice.gpkg'), or give the file's path alone; nothing was run.")
        suffix = QFileInfo(path).completeSuffix()
        if not QgsVectorFileWriter.driverForExtension(suffix):  # QGIS's writer reads the format from all after the name's first dot
            raise QgsProcessingException(
                f"{parameter} is the address {destination!r}: QGIS takes the format of an ogr: address from all after the file name's first dot "
                f"('{suffix}'), and knows none of that name, so it would fail only after the run. Rename the file without a second dot "
                f"(e.g. '{os.path.basename(path).replace('.', '_', suffix.count('.'))}'), or give the file's path alone; nothing was run.")
        return FileDestination(parameter, path, uri.table(), os.path.exists(path))
    provider = destination.split(":", 1)[0]  # "memory", "postgres", ...; never a Windows drive letter
    if ":" in destination and len(provider) > 1 and provider in QgsProviderRegistry.instance().providerList():
        return None
    if vector and not QgsVectorFileWriter.driverForExtension(destination.rsplit(".", 1)[1] if "." in destination else ""):
        destination += ".gpkg"
    path = os.path.abspath(destination)
    return FileDestination(parameter, path, existed=os.path.exists(path))


EARTH_ONLY = ("holds Earth longitudes and latitudes only: QGIS would write this layer's Mars polygons into it without coordinates "
              "(and say only 'Cannot create transform')")
GEOJSON = ("holds WGS 84 longitudes and latitudes only (RFC 7946): QGIS writes the Mars coordinates into it without their CRS, "
           "and every program reads them back as Earth's")
NO_MARS_CRS = "cannot record a Mars CRS: the layer's coordinates would be read back in another CRS or none"
DRAWING = "holds drawings without the layer's fields: QGIS would fail to write it only after the whole run"
# Vector formats that lose a Mars layer's place, refused for layers with geometry.
FORMATS_WITHOUT_MARS = {
    ".kml": ("KML file", EARTH_ONLY), ".kmz": ("KMZ file", EARTH_ONLY), ".gpx": ("GPX file", EARTH_ONLY),
    ".geojson": ("GeoJSON file", GEOJSON), ".json": ("GeoJSON file", GEOJSON), ".geojsonl": ("GeoJSON file", GEOJSON),
    ".geojsons": ("GeoJSON file", GEOJSON), ".gml": ("GML file", NO_MARS_CRS), ".tab": ("MapInfo table", NO_MARS_CRS),
    ".mif": ("MapInfo file", NO_MARS_CRS), ".gxt": ("Geoconcept file", NO_MARS_CRS), ".txt": ("Geoconcept file (QGIS's format for .txt)", NO_MARS_CRS),
    ".dxf": ("DXF drawing", DRAWING), ".dgn": ("DGN drawing", DRAWING), ".000": ("S-57 nautical chart", DRAWING),
}
# Formats no table can be written to, with geometry or without: QGIS's Geoconcept driver (.txt, .gxt) wants a CRS even for a
# table, and a training history named h.txt had left an empty h.txt.gxt and no history, with exit 0.
FORMATS_WITHOUT_TABLES = (".txt", ".gxt")
# Formats QGIS writes a sink to without its geometry (a CSV keeps it only with a layer option).
TABLES_WITHOUT_GEOMETRY = (".csv", ".xlsx", ".ods", ".dbf")
# Formats that cut field names to dBase's 10 characters.
SHORT_NAME_FORMATS = {".shp": "shapefile", ".dbf": "dBase file"}
SHORT_NAME_LIMIT = 10
# Formats that hold several tables, so that an output may name one and leave the others.
MULTI_TABLE_FORMATS = (".gpkg", ".sqlite")


def check_holds_mars(destination: FileDestination) -> None:
    """A layer output in a format that loses its place on Mars is refused, before anything runs."""
    extension = os.path.splitext(destination.path)[1].lower()
    if extension in FORMATS_WITHOUT_MARS:
        kind, why = FORMATS_WITHOUT_MARS[extension]
        raise QgsProcessingException(f"{destination.parameter} is a {kind} ({destination.path}), which {why}. Give a .gpkg (or a "
                                     ".fgb or .shp); nothing was run or written.")
    if extension == ".sqlite" and not destination.table:  # a table named in it is written as SpatiaLite, which keeps the CRS
        raise QgsProcessingException(f"{destination.parameter} is a plain SQLite file ({destination.path}), which QGIS writes without the "
                                     f"layer's Mars CRS ({NO_MARS_CRS.split(': ', 1)[1]}). Give a .gpkg, or name a table of it "
                                     f"({ogr_address(destination.path, 'chunks')}); nothing was run or written.")


def without_geometry_warning(destination: FileDestination) -> str:
    """A warning where the output's format is a table that drops the layer's geometry; empty where it keeps it."""
    extension = os.path.splitext(destination.path)[1].lower()
    if extension not in TABLES_WITHOUT_GEOMETRY:
        return ""
    return (f"{destination.parameter} is a {extension[1:].upper()} file: it keeps the features' fields but not their polygons, so it cannot "
            "be drawn on the map. Give a .gpkg to keep them.")


def cut_field_names_warning(destination: FileDestination, field_names: Iterable[str]) -> str:
    """A warning where the output's format cuts field names the plugin reads back; empty where it keeps them."""
    extension = os.path.splitext(destination.path)[1].lower()
    cut = [name for name in field_names if len(name) > SHORT_NAME_LIMIT]
    if extension not in SHORT_NAME_FORMATS or not cut:
        return ""
    shown = ", ".join(f"{name} as {name[:SHORT_NAME_LIMIT]}" for name in cut[:3]) + (f" and {len(cut) - 3} more" if len(cut) > 3 else "")
    return (f"{destination.parameter} is a {SHORT_NAME_FORMATS[extension]}, which cuts field names to {SHORT_NAME_LIMIT} characters "
            f"({shown}): the plugin's styles and tools then do not find them. Give a .gpkg to keep them.")


def check_not_an_input(destination: FileDestination, read: Iterable) -> None:
    """An output on a file the run reads would destroy it: QGIS and the engine replace an output file
    whole (a GeoPackage table named in the destination is added beside the file's other layers, and
    only replaces the layer of that name). read: (parameter, path, layer name) of each input."""
    replaced = files.replaced_input(destination.path, ((parameter, path) for parameter, path, layer in read
                                                       if not destination.table or destination.table == layer))
    if replaced:
        parameter, path = replaced
        what = f"the table '{destination.table}' of {path}" if destination.table else path
        raise QgsProcessingException(
            f"{destination.parameter} would be written over {what}, which this run reads as {parameter}: writing it would destroy it. "
            "Choose another file name (or another table); nothing was run or written."
        )


# GDAL's GeoPackage driver refuses a layer name that begins with one of these or with "gpkg".
GPKG_LAYER_NAME_START = "!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"


def ogr_address(path: str, table: str) -> str:
    """The ogr: address of a table of the GeoPackage at ``path``, its apostrophes and backslashes escaped as QGIS reads
    dbname='...' (an address the messages suggest had been refused by the check above when pasted)."""
    quoted = path.replace("\\", "\\\\").replace("'", "\\'")
    return f"ogr:dbname='{quoted}' table=\"{table}\" (geom)"


def acceptable_layer_name(name: str) -> str:
    """``name`` without what GDAL refuses at the start of a GeoPackage layer's name ("chunks" where nothing is left)."""
    while name[:1] in GPKG_LAYER_NAME_START and name or name.startswith("gpkg"):
        name = name[4:] if name.startswith("gpkg") else name[1:]
    return name or "chunks"


def check_layer_name(destination: FileDestination) -> None:
    """A layer written to a GeoPackage takes the table's name or, with none, the file's (QGIS's
    writer): refused before any work where GDAL would refuse it after the whole run."""
    if not destination.path.lower().endswith(".gpkg"):
        return
    name = destination.table or os.path.splitext(os.path.basename(destination.path))[0]
    if destination.table and "|" in name:  # QGIS reads "|" as the start of a source's options: the layer is never loaded
        raise _cannot_write(destination, f"QGIS cannot load the table '{name}': it reads '|' in a layer's address as the start of its options",
                            "Name the table without '|'")
    if acceptable_layer_name(name) != name:
        given = f"the table '{name}'" if destination.table else f"'{name}', the file's name, as QGIS names the layer"
        fix = "Name another table" if destination.table else f"Rename the file (e.g. '{acceptable_layer_name(name)}.gpkg')"
        raise _cannot_write(destination, f"GDAL refuses {given}: a GeoPackage layer's name may not begin with 'gpkg' or any of {GPKG_LAYER_NAME_START}", fix)


# QGIS 3.22 opens a GeoPackage through SQLite with such escapes decoded, so a path holding one is a file it
# cannot open (GDAL's own tools can): written, but never styled or loaded.
PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def percent_escape_message(path: str, given: str) -> str:
    """Why QGIS cannot open the GeoPackage ``path`` (``given``: what gave it, e.g. "OUTPUT"), or ""."""
    escape = PERCENT_ESCAPE.search(path) if path.lower().endswith(".gpkg") else None
    if not escape:
        return ""
    return (f"{given} is the GeoPackage {path}, whose path holds '{escape.group(0)}': QGIS reads that as an escaped character and cannot "
            f"open the file (GDAL's own tools can). Rename the folder or file without a '%' followed by two hex digits; nothing was run.")


def check_writable(destination: FileDestination) -> None:
    """Fail before any work when the destination cannot be written (os.access also sees
    read-only file systems and immutable folders, which hold back even root). Unlike the worker's
    files.check_destination, a missing folder is refused, not created: a refused run leaves nothing."""
    refused = files.not_a_place_to_write(destination.path, destination.parameter)
    if refused:
        raise QgsProcessingException(refused)
    folder = os.path.dirname(destination.path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise _cannot_write(destination, f"{folder} is a file, not a folder", "Choose another destination")
    if not os.path.isdir(folder):
        raise _cannot_write(destination, f"the folder {folder} does not exist", "Create it or choose another destination")
    if os.path.isdir(destination.path):
        raise _cannot_write(destination, "that is a folder", "Give a file name")
    escaped = percent_escape_message(destination.path, destination.parameter)
    if escaped:
        raise QgsProcessingException(escaped)
    too_long = files.name_too_long(destination.path)
    if too_long:
        raise _cannot_write(destination, too_long, "Choose a shorter file name")
    # SQLite (GeoPackage) and the engine's atomic rename both create files beside the output.
    if files.write_refused_in(folder):
        raise _cannot_write(destination, f"the folder {folder} is read-only")
    if os.path.exists(destination.path) and not os.access(destination.path, os.W_OK):
        raise _cannot_write(destination, "the file exists and is read-only")
    if destination.table and os.path.isfile(destination.path) and not _is_sqlite(destination.path):
        raise _cannot_write(destination, f"the file exists and is not a GeoPackage, so it cannot take the table '{destination.table}'",
                            "Choose another file, or name this one without a table to replace it")
    if os.path.isfile(destination.path) and destination.path.lower().endswith(".gpkg") and _locked_by_another_program(destination.path):
        raise _cannot_write(destination, "another program holds a write lock on that GeoPackage (unsaved changes in a database browser, another run writing it)",
                            "Save or undo the changes there, or wait for that run, or choose another destination")


def _is_sqlite(path: str) -> bool:
    """Whether the file is an SQLite database (a GeoPackage is one) by its header, or empty (SQLite
    makes one of it); True where it cannot be read, for the writer to say why."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return True
    return header in (b"", b"SQLite format 3\x00")


def _locked_by_another_program(path: str) -> bool:
    """Whether SQLite refuses this process a write transaction on the file for LOCK_WAIT_S: a lock
    that QGIS's writer would otherwise meet only after the network has run (and then wait on)."""
    try:
        connection = sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None)
    except sqlite3.Error:
        return False  # not a database SQLite can open: the writer says what is wrong with it
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    except sqlite3.DatabaseError:
        return False
    finally:
        connection.close()


def _cannot_write(destination: FileDestination, why: str, fix: str = "Choose another destination") -> QgsProcessingException:
    return QgsProcessingException(f"{destination.parameter} cannot be written to {destination.path}: {why}. {fix}; nothing was run or written.")


def check_outputs_apart(destinations: List[Tuple[FileDestination, bool]]) -> None:
    """No two outputs on one file, in the order the algorithm writes them ((destination, vector layer)
    pairs): the later would replace the earlier (a report written over the trained model, which the run
    then reported as saved). Layers may share a GeoPackage where each names its own table."""
    for index, (first, first_vector) in enumerate(destinations):
        for later, later_vector in destinations[index + 1:]:
            if files.path_key(first.path) != files.path_key(later.path):
                continue
            if first_vector and later_vector:
                check_not_replaced_later(first, later)
                if later.table != first.table:
                    continue
            raise QgsProcessingException(
                f"{first.parameter} and {later.parameter} are both {later.path}{f' (table {later.table})' if later.table else ''}: the one "
                f"written last would replace the other. Give each its own file name; nothing was run or written."
            )


def check_styles_apart(styled: Iterable[FileDestination]) -> None:
    """No two styled outputs with one style file: QGIS loads <name>.qml beside a layer outside a GeoPackage as its
    style, so a chunk layer ice.shp and a probability raster ice.tif would share ice.qml, and one lose its colours."""
    seen: Dict[str, FileDestination] = {}
    for destination in styled:
        if os.path.splitext(destination.path)[1].lower() in MULTI_TABLE_FORMATS:
            continue  # its style is stored inside it
        sidecar = os.path.splitext(destination.path)[0] + ".qml"
        first = seen.setdefault(files.path_key(sidecar), destination)
        if first is not destination:
            raise QgsProcessingException(
                f"{first.parameter} ({first.path}) and {destination.parameter} ({destination.path}) would share the style file {sidecar}, "
                "which QGIS reads as both layers' style: one would lose its colours. Give them different names; nothing was run or written."
            )


def check_not_replaced_later(first: FileDestination, later: FileDestination) -> None:
    """A later plain-file sink on the file of an earlier one would delete what that one wrote."""
    if files.path_key(later.path) == files.path_key(first.path) and not later.table:
        raise QgsProcessingException(
            f"{first.parameter} and {later.parameter} both write {first.path}, and {later.parameter} names the file without a table, "
            f"so QGIS would replace the whole file and lose {first.parameter}. Name a table for each, e.g. "
            f"{ogr_address(first.path, later.parameter.lower())}, or use another file."
        )


def vector_layer_names(path: str) -> List[str]:
    """The layers of an existing vector file, read with OGR; empty when there is none."""
    if not os.path.isfile(path):
        return []
    try:
        with gdal_exceptions():
            dataset = gdal.OpenEx(path, gdal.OF_VECTOR | gdal.OF_READONLY)
            return [dataset.GetLayer(i).GetName() for i in range(dataset.GetLayerCount())]
    except RuntimeError:  # not a vector file: QGIS replaces it all the same
        return []


def labels_in(path: str, table: str = "") -> Dict[str, Tuple[int, List[str]]]:
    """{layer: (how many of its features carry a mark, the fields holding them)} for the layers of an existing vector file (``table``
    alone where given) that are chunk layers or have a 'label' field: 'label', and any field no algorithm writes (a field of the
    geologist's own, 'ice', read by train's LABEL_FIELD), is what a geologist marked, which replacing them would lose."""
    if not os.path.isfile(path):
        return {}
    written = {name for fields in (schema.DETECTION_FIELDS, schema.SUMMARY_FIELDS, schema.CHUNK_GRID_FIELDS) for name, _ in fields}
    written |= {name[:10] for name in written}  # as a shapefile cuts them
    marked = {}
    try:
        with gdal_exceptions():
            dataset = gdal.OpenEx(path, gdal.OF_VECTOR | gdal.OF_READONLY)
            for index in range(dataset.GetLayerCount()):
                layer = dataset.GetLayer(index)
                definition = layer.GetLayerDefn()
                names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
                if (table and layer.GetName() != table) or not ({"label", "chunk_id"} & set(names)):
                    continue
                own = [name for name in names if name == "label" or name.lower() not in written]
                if not own:
                    continue
                holding = []
                for name in own:
                    layer.SetAttributeFilter(f'"{name}" IS NOT NULL')
                    if layer.GetFeatureCount():
                        holding.append(name)
                if holding:
                    layer.SetAttributeFilter(" OR ".join(f'"{name}" IS NOT NULL' for name in holding))
                    marked[layer.GetName()] = (layer.GetFeatureCount(), holding)
    except RuntimeError:  # not a vector file, or no such filter there: nothing a geologist labelled
        return {}
    return marked


def check_labels_not_replaced(destination: FileDestination) -> None:
    """Refuse an output that would replace chunks a geologist has labelled: rerunning Detect into the labelled
    chunks.gpkg wiped its labels with a line in the log."""
    labelled = labels_in(destination.path, destination.table)
    if not labelled:
        return
    where = f"the table '{destination.table}' of {destination.path}" if destination.table else f"the file {destination.path}"
    held = ", ".join(f"'{name}' holds {count} chunk(s) you marked (in {', '.join(fields)})" for name, (count, fields) in labelled.items())
    table_instead = (f", or a new table of it ({ogr_address(destination.path, 'chunks_2')})"
                     if os.path.splitext(destination.path)[1].lower() in MULTI_TABLE_FORMATS else "")
    raise QgsProcessingException(
        f"{destination.parameter} would replace {where}, whose layer {held}: they would be lost. Give another "
        f"file{table_instead}; or, to start over, delete or rename the labelled file first."
    )


# A survey's tables, and those only a survey's GeoPackage holds, beside Detect's chunks and summary.
SURVEY_TABLES = {name for name, _, _ in surveystore.LAYERS} | {surveystore.SETTINGS_TABLE}
SURVEY_ONLY_TABLES = SURVEY_TABLES - {"chunks", "summary", surveystore.SETTINGS_TABLE}


def check_not_into_a_survey(destination: FileDestination) -> None:
    """Refuse a layer output that would replace a survey GeoPackage's own table, or the whole survey: Detect's summary into a survey's
    'summary' left one row in the image's CRS, and the survey resumed writing degrees into that layer in metres. Tables of the user's
    own in that file are theirs to write again. SQLite's table names ignore case: 'Chunks' is 'chunks'."""
    if not os.path.isfile(destination.path) or not destination.path.lower().endswith(".gpkg"):
        return
    tables = {name.casefold() for name in vector_layer_names(destination.path)}
    if not SURVEY_ONLY_TABLES <= tables or (destination.table and destination.table.casefold() not in SURVEY_TABLES):
        return
    free = next(name for name in (f"chunks_{n}" for n in range(2, 10000)) if name not in tables)
    what = f"its table '{destination.table}'" if destination.table else "the whole file"
    raise QgsProcessingException(
        f"{destination.parameter} would replace {what}, and {destination.path} is a survey's GeoPackage (hiriseice:survey resumes from its "
        f"tables): give another file, or a new table of it ({ogr_address(destination.path, free)}); nothing was run or written."
    )


def written_feature_count(destination: FileDestination) -> Optional[int]:
    """Features in the destination's layer as OGR reads the closed file back; None when the
    file or the layer is not there."""
    try:
        with gdal_exceptions():
            dataset = gdal.OpenEx(destination.path, gdal.OF_VECTOR | gdal.OF_READONLY)
            name = destination.table or os.path.splitext(os.path.basename(destination.path))[0]
            layer = dataset.GetLayerByName(name) or (dataset.GetLayer(0) if dataset.GetLayerCount() == 1 else None)
            return None if layer is None else int(layer.GetFeatureCount())
    except RuntimeError:
        return None


# A GeoPackage's own tables and a chunk's row (polygon, fields, spatial index), with room to spare, twice:
# SQLite writes them into its -wal first, then into the file (with 268 kB free, 8 chunks stayed in the -wal).
GEOPACKAGE_BASE_BYTES = 512_000
BYTES_PER_CHUNK = 3_000
# Free space beyond what a failed write could have been short of: a failure there is not for room.
ROOMY_DISK_MB = 2_000


def check_free_space(destinations: Iterable[FileDestination], chunks: int) -> None:
    """Fail before any work when a destination's disk cannot hold the layers about to be written."""
    check_room(destinations, GEOPACKAGE_BASE_BYTES + BYTES_PER_CHUNK * chunks, f"the {chunks} chunks")


def check_room(destinations: Iterable[FileDestination], needed: int, what: str) -> None:
    """Fail before any work when a destination's disk has less than `needed` bytes free for `what`."""
    for destination in destinations:
        free = shutil.disk_usage(os.path.dirname(destination.path)).free
        if free < needed:
            raise _cannot_write(destination, f"its disk has {free / 1e6:.2f} MB free and {what} need about {needed / 1e6:.2f} MB",
                                "Free some space or choose another destination")


SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
SQLITE_PARTS = ("-wal", "-shm", "-journal")
# An existing output larger than this is not copied before a run (a project's GeoPackage that a chunk table is added to).
KEEP_WHOLE_LIMIT_BYTES = 1 << 30


def files_of(destination: FileDestination) -> List[str]:
    """The files a destination is written as: a shapefile's parts, an SQLite file's journals."""
    base, extension = os.path.splitext(destination.path)
    if extension.lower() == ".shp":
        return [base + (part if extension == ".shp" else part.upper()) for part in SHAPEFILE_PARTS]
    return [destination.path] + [destination.path + part for part in SQLITE_PARTS]


def processing_temp_folder() -> str:
    """QGIS's temporary folder for this session, where the run's files for the worker go; refused
    where QGIS could make none (it then gives "", and they would land in the current folder, where
    the worker, started elsewhere, cannot find them) or one it cannot write (TMPDIR missing)."""
    folder = QgsProcessingUtils.tempFolder()
    if not folder or not os.path.isdir(folder) or files.write_refused_in(folder):
        raise QgsProcessingException(
            f"QGIS has no temporary folder it can write ({folder or 'it could make none'}; TMPDIR is {os.environ.get('TMPDIR') or 'not set'}). "
            "Point TMPDIR at a folder you can write to and start QGIS or qgis_process again; nothing was run.")
    return folder


def remove_created(destinations: Iterable[FileDestination]) -> None:
    """Delete the files this run created (a failed run leaves no half-written output)."""
    for destination in destinations:
        if not destination.existed:
            files.remove_quietly(files_of(destination))


# The run of this thread's innermost kept_whole: {"started": whether it has begun replacing its outputs}.
_RUN = threading.local()


def replacing_outputs() -> None:
    """The run in this thread begins replacing its outputs (its worker's files are in place, or it writes a layer):
    from now on a failure puts back what it replaced (kept_whole). Before, it has replaced nothing, and a failure
    leaves every output as it finds it: another run may have written there meanwhile (two runs into one
    GeoPackage, the second cancelled while its worker scored, had removed the first's finished table)."""
    state = getattr(_RUN, "state", None)
    if state is not None:
        state["started"] = True


@contextlib.contextmanager
def kept_whole(destinations: Iterable[FileDestination], say: Callable[[str], None]):
    """A run that fails leaves the output files it replaces whole as they were before it: QGIS replaces an output file as soon
    as it writes it, so a later output's failure had already replaced a chunk layer and the labels in it. Each such existing file
    is copied beside itself first and put back on failure; the files the run created are removed. A table named in an existing
    GeoPackage is not: putting the whole file back would undo what other programs saved in its other tables meanwhile. Nor is
    anything before the run begins replacing its outputs (replacing_outputs): until then it has replaced nothing."""
    destinations = list(destinations)
    replaced = [destination for destination in destinations if not destination.table]
    watched = replaced + [destination for destination in destinations if destination.table and not os.path.isfile(destination.path)]
    existed = {path for destination in watched for path in files_of(destination) if os.path.isfile(path)}
    copies: Dict[str, str] = {}
    outer, _RUN.state = getattr(_RUN, "state", None), {"started": False}
    state = _RUN.state
    try:
        for destination in replaced:
            for path in files_of(destination):
                _remove_copies_of_killed_runs(path, say)
                if path not in existed or path in copies:
                    continue
                if os.path.getsize(path) > KEEP_WHOLE_LIMIT_BYTES:
                    say(f"{destination.parameter}: {path} is larger than {KEEP_WHOLE_LIMIT_BYTES >> 30} GB, so it is not copied first: "
                        "should this run fail, it is lost.")
                    continue
                copy = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.before-run-{os.getpid()}")
                copies[path] = copy
                try:
                    shutil.copy2(path, copy)
                except OSError:
                    del copies[path]
                    files.remove_quietly([copy])
                    say(f"{destination.parameter}: {path} could not be copied first (no room?): should this run fail, it is lost.")
        yield
    except BaseException:  # the run failed, or was stopped (while copying too)
        if state["started"]:
            files.remove_quietly([path for destination in watched for path in files_of(destination) if path not in existed])
            for path, copy in list(copies.items()):
                try:
                    os.replace(copy, path)
                except OSError as exc:  # on Windows, another program holding the file open (its layer in QGIS)
                    del copies[path]
                    say(f"{path} could not be put back as it was before this run ({exc.strerror or exc}); "
                        f"that file is kept as {_keep_as_found(copy, path)}.")
        raise
    finally:
        _RUN.state = outer
        files.remove_quietly(list(copies.values()))


def _keep_as_found(copy: str, path: str) -> str:
    """The copy of ``path`` renamed where a user finds it, and where no later run removes it as a killed run's; its name."""
    stem, extension = os.path.splitext(path)
    kept = f"{stem} (before a failed run){extension}"
    try:
        os.replace(copy, kept)
    except OSError:
        return copy
    return kept


def _remove_copies_of_killed_runs(path: str, say: Callable[[str], None]) -> None:
    """The copies kept_whole made of ``path`` for runs that were killed (SIGKILL, a machine out of memory) before they
    could remove them: their process is gone, and each copy may weigh a gigabyte."""
    folder, name = os.path.split(path)
    prefix = f".{name}.before-run-"
    for entry in os.listdir(folder or "."):
        pid = entry[len(prefix):]
        if not entry.startswith(prefix) or not pid.isdigit() or _process_alive(int(pid)):
            continue
        files.remove_quietly([os.path.join(folder, entry)])
        say(f"Removed {os.path.join(folder, entry)}, the copy of {name} a run killed before it ended (process {pid}) had kept.")


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would end the process there, not ask after it
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (PermissionError), or a system that cannot tell: left alone
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs, asked of Windows without signalling it; True where it cannot tell."""
    import ctypes

    try:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() != 87  # ERROR_INVALID_PARAMETER: no such process
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    except (AttributeError, OSError):
        return True


def check_written(destination: FileDestination, expected: int, what: str) -> None:
    """Read a closed sink's file back: QGIS reports neither a full disk nor a GeoPackage whose table
    was never created (issue 9: a full disk gave exit 0 and an empty file)."""
    written = written_feature_count(destination) or 0
    if written != expected:
        raise not_written(destination, what, f"{written} of {expected} features are there")
    failure = checkpoint_failure(destination.path)
    if failure:
        raise not_written(destination, what, f"its last writes are still only in {os.path.basename(destination.path)}-wal ({failure}), "
                                             "so the file alone, copied or sent, would be unreadable")


def checkpoint_failure(path: str) -> str:
    """SQLite's error moving a GeoPackage's write-ahead log into the file, or '': QGIS closes the layer as if that
    had worked, and on a full disk (issue: exit 0) the rows stayed in the -wal beside a .gpkg unreadable alone.
    Another program reading it (busy) is no failure: the last connection to close moves them."""
    if not os.path.isfile(path + "-wal") or os.path.getsize(path + "-wal") == 0:
        return ""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as exc:
        return str(exc)
    return ""


def not_written(destination: FileDestination, what: str, how_far: str) -> QgsProcessingException:
    """The one message for an output that failed while being written; a file this run created is
    removed first, so no half-written output is left."""
    remove_created([destination])
    folder = os.path.dirname(destination.path)
    free_mb = shutil.disk_usage(folder).free / 1e6 if os.path.isdir(folder) else 0.0
    if os.path.isdir(folder) and not os.access(folder, os.W_OK):  # read-only (a disk remounted so, a folder not yours): room is not the fix
        fix = "Its folder cannot be written to (read-only, or not yours): choose another destination and run again"
    elif free_mb < ROOMY_DISK_MB:
        fix = "Free some space (or choose another destination) and run again"
    else:  # with room to spare, what holds back a write is a lock (SQLite's) or the file's owner
        fix = ("Close it in any program that has it open (a QGIS project with its layers loaded, a database browser), "
               "or choose another destination, and run again")
    return QgsProcessingException(
        f"{destination.parameter}: the {what} layer could not be written to {destination.path}: {how_far}, and {free_mb:.1f} MB is free on that disk. "
        + fix + ("; the file was removed." if not destination.existed else
                 "; other tables of that file were left as they were." if destination.table else "; the file is left as it was before this run.")
    )


def report_replaced_layers(destination: FileDestination, feedback) -> None:
    """Say which existing layers writing the destination replaces (call just before the sink is made)."""
    layers = vector_layer_names(destination.path)
    if destination.table and destination.table in layers:
        feedback.pushInfo(f"{destination.parameter}: replacing the table '{destination.table}' in {destination.path}")
    elif not destination.table and layers:
        # only a GeoPackage (or SQLite) holds tables beside each other
        add_instead = (f"; to add a table instead: {ogr_address(destination.path, 'name')}"
                       if os.path.splitext(destination.path)[1].lower() in MULTI_TABLE_FORMATS else "")
        feedback.pushInfo(
            f"{destination.parameter}: replacing the file {destination.path}, with its layer(s) {', '.join(layers)} "
            f"(QGIS replaces a file named without a table{add_instead})"
        )
