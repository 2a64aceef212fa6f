"""Reading local indexes of HiRISE RDR products into Products (model/products.py).

- ``RDRCUMINDEX.LBL`` + ``RDRCUMINDEX.TAB`` (PDS3 fixed-width ASCII table): the label's COLUMN
  objects (NAME, START_BYTE, BYTES) say where each field lies in a row; the URLs are
  PDS_BASE_URL + FILE_NAME_SPECIFICATION.
- A CSV with the columns of ``hirise_rdr_index.csv.gz`` (FILE_NAME, MINIMUM_LATITUDE, ...,
  IMG_URL, LABEL_URL). Its rows are COLOR products (``*_COLOR.IMG`` or ``*_UNFILTERED_COLOR.IMG``;
  10,322 rows of the full index repeat a product read before, read once); a RED product's URLs are derived from the COLOR ones
  (same folder, ``_RED.JP2``), as the HiRISE archive lays them out. It has no MAP_SCALE.
- A two-column CSV of science themes (file or product name, theme).
"""

import csv
import gzip
import io
import os
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

from . import files
from .products import CatalogError, Product, as_float, as_int, observation_of, observing_conditions, product_type_of, unwrap_ring


PDS_BASE_URL = "https://hirise-pds.lpl.arizona.edu/PDS/"
BUNDLED_EXTRACT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resources", "index", "hirise_rdr_paper_window.csv.gz")


def _open_text(path: str):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return open(path, "r", encoding="utf-8-sig", errors="replace", newline="")


def _red_url(color_url: str) -> str:
    return re.sub(r"_COLOR(\.[A-Za-z0-9]+)$", r"_RED\1", color_url)


def read_themes(path: str) -> Dict[str, Set[str]]:
    """Observation ID -> science themes, from a two-column CSV (file or product name, theme), with or without header."""
    themes: Dict[str, Set[str]] = {}
    with _open_text(path) as handle:
        for row in csv.reader(handle):
            if len(row) < 2:
                continue
            observation = observation_of(row[0])
            if observation and row[1].strip():
                themes.setdefault(observation, set()).add(row[1].strip())
    if not themes:
        raise CatalogError(f"The themes file {path} holds no (product, theme) rows: give a CSV like hirise_themes.csv.gz (FILE_NAME,THEME).")
    return themes


@dataclass
class ReadStats:
    rows: int = 0
    without_metadata: int = 0
    duplicates: int = 0
    has_map_scale: bool = False


def read_csv_index(path: str, product_type: str = "RED", stats: Optional[ReadStats] = None) -> Iterator[Product]:
    """Products of a CSV like hirise_rdr_index.csv.gz (one COLOR row per product, see the module's notes)."""
    stats = stats if stats is not None else ReadStats()
    product_type = product_type.upper()
    seen: Dict[str, Product] = OrderedDict()
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().upper(): name for name in (reader.fieldnames or [])}
        required = ("MINIMUM_LATITUDE", "MAXIMUM_LATITUDE", "WESTERNMOST_LONGITUDE", "EASTERNMOST_LONGITUDE", "IMG_URL")
        missing = [c for c in required if c not in columns]
        if missing:
            raise CatalogError(f"{path} is not a HiRISE index CSV: it lacks the columns {', '.join(missing)}. Give a CSV like hirise_rdr_index.csv.gz, or RDRCUMINDEX.LBL with its .TAB.")
        stats.has_map_scale = "MAP_SCALE" in columns

        def first(row, *names):
            values = (row.get(columns[name]) for name in names if name in columns)
            return next((value for value in values if value not in (None, "")), None)

        for row in reader:
            stats.rows += 1
            url = (first(row, "IMG_URL") or "").strip()
            south, north = as_float(first(row, "MINIMUM_LATITUDE")), as_float(first(row, "MAXIMUM_LATITUDE"))
            west, east = as_float(first(row, "WESTERNMOST_LONGITUDE")), as_float(first(row, "EASTERNMOST_LONGITUDE"))
            if not url or None in (south, north, west, east):
                stats.without_metadata += 1
                continue
            label_url = (first(row, "LABEL_URL") or "").strip() or re.sub(r"\.JP2$", ".LBL", url, flags=re.I)
            observation = observation_of(url)
            if product_type == "RED":
                url, label_url = _red_url(url), _red_url(label_url)
            product_id = os.path.splitext(os.path.basename(url))[0]
            file_name = (first(row, "FILE_NAME") or "").strip().upper()
            exact = os.path.splitext(file_name)[0] == product_id.upper() if file_name else False
            if product_id in seen:
                stats.duplicates += 1
                if not exact:  # keep the row whose FILE_NAME is the JP2's own product
                    continue
            seen[product_id] = Product(
                product_id=product_id,
                observation_id=observation,
                product_type=product_type,
                minimum_latitude=south,
                maximum_latitude=north,
                westernmost_longitude=west,
                easternmost_longitude=east,
                jp2_url=url,
                lbl_url=label_url,
                **observing_conditions(lambda *names: first(row, *names)),
                index_storage_bytes=as_int(first(row, "REQUIRED_STORAGE_BYTES")) if product_type == "COLOR" else None,
                source=os.path.basename(path),
            )
    yield from seen.values()


@dataclass
class TableColumn:
    name: str
    start_byte: int  # 1-based, as PDS3 counts
    nbytes: int
    data_type: str = "CHARACTER"


@dataclass
class TableLayout:
    table_file: str
    row_bytes: Optional[int]
    rows: Optional[int]
    columns: List[TableColumn]


def parse_index_label(text: str) -> TableLayout:
    """The INDEX_TABLE (or TABLE) object of a PDS3 label: the table's file name, row length and columns."""
    table_file = ""
    match = re.search(r'^\s*\^(?:\w*_)?TABLE\s*=\s*\(?\s*"?([^",)\s]+)"?', text, re.M | re.I)
    if match:
        table_file = match.group(1)
    columns: List[TableColumn] = []
    current: Optional[Dict[str, str]] = None
    row_bytes = rows = None
    depth_in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        m = re.match(r"^(\^?[A-Z0-9_:]+)\s*=\s*(.*)$", line, re.I)
        if not m:
            continue
        key, value = m.group(1).upper(), m.group(2).strip().strip('"').strip()
        if key == "OBJECT" and value.upper().endswith("TABLE"):
            depth_in_table = True
        elif key == "OBJECT" and value.upper() == "COLUMN":
            current = {}
        elif key == "END_OBJECT" and value.upper() == "COLUMN" and current is not None:
            try:
                columns.append(TableColumn(current["NAME"], int(current["START_BYTE"]), int(current["BYTES"]), current.get("DATA_TYPE", "CHARACTER")))
            except (KeyError, ValueError):
                raise CatalogError(f"A COLUMN of the index label lacks NAME, START_BYTE or BYTES ({current}): is this RDRCUMINDEX.LBL?") from None
            current = None
        elif current is not None:
            current[key] = value
        elif depth_in_table and key == "ROW_BYTES":
            row_bytes = int(value)
        elif depth_in_table and key == "ROWS":
            rows = int(value)
    if not columns:
        raise CatalogError("The label describes no table columns (no OBJECT = COLUMN with NAME, START_BYTE, BYTES): give the index's own .LBL (RDRCUMINDEX.LBL).")
    return TableLayout(table_file, row_bytes, rows, columns)


def _companion(path: str, name: str) -> Optional[str]:
    """``name`` beside ``path``, matched case-insensitively."""
    folder = os.path.dirname(os.path.abspath(path))
    for candidate in os.listdir(folder):
        if candidate.lower() == os.path.basename(name).lower():
            return os.path.join(folder, candidate)
    return None


def pds_index_files(path: str) -> Tuple[str, str]:
    """(label, table) from either of them."""
    stem, ext = os.path.splitext(path)
    if ext.lower() == ".lbl":
        label = path
        with open(label, "r", encoding="latin-1") as handle:
            layout = parse_index_label(handle.read())
        table = _companion(label, layout.table_file) if layout.table_file else None
        table = table or _companion(label, os.path.basename(stem) + ".TAB")
        if not table:
            raise CatalogError(f"The table of {label} ({layout.table_file or os.path.basename(stem) + '.TAB'}) is not beside it: download RDRCUMINDEX.TAB into the same folder.")
        return label, table
    label = _companion(path, os.path.basename(stem) + ".LBL")
    if not label:
        raise CatalogError(f"{path} needs its label {os.path.basename(stem)}.LBL beside it (the label says where each column lies): download RDRCUMINDEX.LBL too.")
    return label, path


def read_pds_index(path: str, product_type: str = "RED", base_url: str = PDS_BASE_URL, stats: Optional[ReadStats] = None) -> Iterator[Product]:
    """Products of RDRCUMINDEX.TAB, its columns located by RDRCUMINDEX.LBL."""
    stats = stats if stats is not None else ReadStats()
    product_type = product_type.upper()
    label, table = pds_index_files(path)
    with open(label, "r", encoding="latin-1") as handle:
        layout = parse_index_label(handle.read())
    names = {c.name.upper(): c for c in layout.columns}
    stats.has_map_scale = "MAP_SCALE" in names
    for needed in ("FILE_NAME_SPECIFICATION",):
        if needed not in names:
            raise CatalogError(f"{label} has no {needed} column, so products cannot be located: is it the HiRISE RDR index?")

    def field_of(line: str, name: str) -> Optional[str]:
        column = names.get(name)
        if column is None:
            return None
        return line[column.start_byte - 1: column.start_byte - 1 + column.nbytes].strip().strip('"').strip()

    def first(line, *choices):
        for name in choices:
            value = field_of(line, name)
            if value not in (None, ""):
                return value
        return None

    with open(table, "r", encoding="latin-1", newline="") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            stats.rows += 1
            spec = field_of(line, "FILE_NAME_SPECIFICATION") or ""
            product_id = first(line, "PRODUCT_ID") or os.path.splitext(os.path.basename(spec))[0]
            kind = product_type_of(product_id)
            if kind != product_type:
                continue
            south, north = as_float(first(line, "MINIMUM_LATITUDE")), as_float(first(line, "MAXIMUM_LATITUDE"))
            west = as_float(first(line, "WESTERNMOST_LONGITUDE", "MINIMUM_LONGITUDE"))
            east = as_float(first(line, "EASTERNMOST_LONGITUDE", "MAXIMUM_LONGITUDE"))
            corners = []
            for i in range(1, 5):
                lat, lon = as_float(field_of(line, f"CORNER{i}_LATITUDE")), as_float(field_of(line, f"CORNER{i}_LONGITUDE"))
                if lat is not None and lon is not None:
                    corners.append((lon, lat))
            corners = corners if len(corners) == 4 else None
            if corners and None in (south, north, west, east):
                south, north = min(c[1] for c in corners), max(c[1] for c in corners)
                unwrapped = unwrap_ring(corners)
                west, east = min(c[0] for c in unwrapped) % 360.0, max(c[0] for c in unwrapped) % 360.0
            if not spec or None in (south, north, west, east):
                stats.without_metadata += 1
                continue
            stem = os.path.splitext(spec.lstrip("/"))[0]
            root = base_url.rstrip("/") + "/"
            yield Product(
                product_id=product_id,
                observation_id=first(line, "OBSERVATION_ID") or observation_of(product_id),
                product_type=kind,
                minimum_latitude=south,
                maximum_latitude=north,
                westernmost_longitude=west,
                easternmost_longitude=east,
                jp2_url=root + stem + ".JP2",
                lbl_url=root + stem + ".LBL",
                **observing_conditions(lambda *names: first(line, *names)),
                corners=corners,
                source=os.path.basename(table),
            )


def read_index(path: str, product_type: str = "RED", stats: Optional[ReadStats] = None) -> Iterator[Product]:
    """Products of a local index: RDRCUMINDEX.LBL/.TAB or a CSV (plain or gzip)."""
    if not os.path.isfile(path):
        raise CatalogError(files.special_file_message(path, "index") or
                           f"The index {path} does not exist: give RDRCUMINDEX.LBL (with its .TAB beside it) or a CSV like hirise_rdr_index.csv.gz.")
    if os.path.splitext(path)[1].lower() in (".lbl", ".tab"):
        return read_pds_index(path, product_type, stats=stats)
    return _damage_said(path, read_csv_index(path, product_type, stats=stats))


def _damage_said(path: str, products: Iterator[Product]) -> Iterator[Product]:
    """The products; a compressed index cut short or corrupted (gzip finds it only mid-read) is named as such."""
    try:
        yield from products
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise CatalogError(f"The index {path} is damaged ({exc}): it was probably cut short or corrupted by an interrupted "
                           "download or copy. Download it again.") from None
    except csv.Error as exc:  # e.g. a field of megabytes: no index's, a file named like one
        raise CatalogError(f"The index {path} is not a readable CSV ({exc}). Give a CSV like hirise_rdr_index.csv.gz, "
                           "or RDRCUMINDEX.LBL with its .TAB.") from None
