"""Finding HiRISE RDR products: in a local index (the PDS cumulative index or a CSV, model/productindex.py)
or through ODE's REST service (model/ode.py), those a query selects (model/products.py); and the report of
what was found.

Pure Python (csv, json, urllib): QGIS's algorithm (processing_provider/find_algorithm.py)
and the command line (``python3 -m model.catalog``) use it alike.
"""

import csv
import html
import math
import os
import re
import sys
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from .errors import CancelledError, EngineError
from .ode import ODE_URL, ode_pages
from .orientation import NORTH_FAR_DEG
from .productindex import ReadStats, read_index, read_themes
from .products import PAPER_LATITUDE, PAPER_LS, PRODUCT_TYPES, CatalogError, Product, Query
from .schema import CATALOG_FIELDS


# --- finding --------------------------------------------------------------------------------


@dataclass
class FindResult:
    products: List[Product]
    scanned: int
    without_metadata: int
    rejected: Counter
    source: str
    duplicates: int = 0


def find(source: str, query: Query, themes_path: Optional[str] = None, ode_url: str = ODE_URL, opener=None,
         is_cancelled: Callable[[], bool] = lambda: False, log: Callable[[str], None] = lambda s: None) -> FindResult:
    """Products of ``source`` (an index path, or "ode") that match ``query``, sorted by product ID."""
    themes = read_themes(themes_path) if themes_path else {}
    if query.themes and not themes:
        raise CatalogError("A science theme was asked for but no themes file was given: give hirise_themes.csv.gz (FILE_NAME,THEME).")
    stats = ReadStats()
    if source.lower() == "ode":
        products = ode_pages(query, ode_url, opener=opener, is_cancelled=is_cancelled, log=log)
        stats.has_map_scale = True
        label = f"ODE ({ode_url})"
    else:
        products = read_index(source, query.product_type, stats)
        label = source
    matched: List[Product] = []
    rejected: Counter = Counter()
    scanned = 0
    for number, product in enumerate(products):
        if number % 2000 == 0 and is_cancelled():
            raise CancelledError("Cancelled by the user; no footprint layer was written.")
        scanned += 1
        if themes:
            product.themes = set(themes.get(product.observation_id, ()))
        failed = query.failed_test(product)
        if failed:
            rejected[failed] += 1
        else:
            matched.append(product)
    if (query.scale_min is not None or query.scale_max is not None) and not stats.has_map_scale:
        raise CatalogError(f"{os.path.basename(label)} has no MAP_SCALE column, so the map-scale limits cannot be applied: clear them, or search RDRCUMINDEX.LBL or ODE.")
    matched.sort(key=lambda p: p.product_id)
    return FindResult(matched, scanned if source.lower() == "ode" else stats.rows, stats.without_metadata, rejected, label, stats.duplicates)


# --- the report -----------------------------------------------------------------------------


def ls_bin(ls: Optional[float], width: float = 10.0) -> str:
    if ls is None:
        return "unknown"
    start = math.floor(ls / width) * width
    return f"{start:g}-{start + width:g}"


def window_counts(products: Iterable[Product], ls_width: float = 10.0) -> Dict[str, Dict[str, int]]:
    products = list(products)
    by_year = Counter(str(p.year) if p.year else "unknown" for p in products)
    by_mars_year = Counter(f"MY{p.mars_year}" if p.mars_year else "unknown" for p in products)
    by_ls = Counter(ls_bin(p.solar_longitude, ls_width) for p in products)
    by_lat = Counter(ls_bin(p.centre_latitude, 5.0) for p in products)

    def ordered(counter):
        return OrderedDict(sorted(counter.items(), key=lambda kv: (_sort_key(kv[0]))))

    return OrderedDict(
        total={"products": len(products), "observations": len({p.observation_id for p in products})},
        year=ordered(by_year), mars_year=ordered(by_mars_year), solar_longitude=ordered(by_ls), centre_latitude=ordered(by_lat),
    )


def _sort_key(text: str):
    match = re.search(r"-?\d+(\.\d+)?", text)
    return (0, float(match.group(0))) if match else (1, text)


def describe_query(query: Query) -> str:
    def window(a, b, unit=""):
        if a is None and b is None:
            return "any"
        return f"{'-inf' if a is None else f'{a:g}'} to {'inf' if b is None else f'{b:g}'}{unit}"

    def given(name, low, high, taken="low to high"):
        return f" (given from {high:g} to {low:g}: taken {taken})" if name in query.swapped else ""

    parts = [
        f"{query.product_type} products", f"centre latitude {window(query.latitude_min, query.latitude_max)}"
        + given("latitude", query.latitude_min, query.latitude_max, "south to north"),
        f"Ls {window(query.ls_start, query.ls_end)}" + (" (wraps through 360)" if None not in (query.ls_start, query.ls_end) and query.ls_start > query.ls_end else ""),
    ]
    if query.incidence_min is not None or query.incidence_max is not None:
        parts.append(f"incidence {window(query.incidence_min, query.incidence_max)}" + given("incidence", query.incidence_min, query.incidence_max))
    if query.local_time_start is not None or query.local_time_end is not None:
        parts.append(f"local time {window(query.local_time_start, query.local_time_end, ' h')}")
    if query.scale_min is not None or query.scale_max is not None:
        parts.append(f"map scale {window(query.scale_min, query.scale_max, ' m/px')}" + given("scale", query.scale_min, query.scale_max))
    if query.themes:
        parts.append("themes " + ", ".join(query.themes))
    if query.areas:
        parts.append(f"{len(query.areas)} drawn area(s)")
    return "; ".join(parts)


def report_lines(result: FindResult, query: Query) -> List[str]:
    counts = window_counts(result.products)
    lines = [
        f"Source: {result.source}; {result.scanned} index rows read"
        + (f", {result.without_metadata} without latitude/longitude metadata skipped" if result.without_metadata else "")
        + (f", {result.duplicates} of them repeating a product read before (counted once)" if result.duplicates else ""),
        f"Query: {describe_query(query)}",
        f"Found {counts['total']['products']} products ({counts['total']['observations']} observations)",
    ]
    if result.rejected:
        lines.append("Rejected by: " + ", ".join(f"{k} {v}" for k, v in result.rejected.most_common()))
    turned = sum(abs(p.north_turn) > NORTH_FAR_DEG for p in result.products)
    if turned:
        lines.append(f"{turned} of them are polar stereographic maps whose north turns more than {NORTH_FAR_DEG:.0f} deg from up (field north_turn): "
                     "Detect and Train read them through a north-up view warped on the fly")
    for title, key in (("By year (UTC start)", "year"), ("By Mars year", "mars_year"), ("By Ls bin (degrees)", "solar_longitude")):
        lines.append(f"{title}: " + ", ".join(f"{k}: {v}" for k, v in counts[key].items()))
    return lines


def write_report_csv(path: str, result: FindResult) -> None:
    counts = window_counts(result.products)
    partial = _partial(path)
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["grouping", "bin", "products"])
        writer.writerow(["total", "all", counts["total"]["products"]])
        for key in ("year", "mars_year", "solar_longitude", "centre_latitude"):
            for bin_name, value in counts[key].items():
                writer.writerow([key, bin_name, value])
    os.replace(partial, path)


def write_report_html(path: str, result: FindResult, query: Query) -> None:
    counts = window_counts(result.products)

    def table(title, mapping):
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td style='text-align:right'>{v}</td></tr>" for k, v in mapping.items())
        return f"<h2>{html.escape(title)}</h2><table border='1' cellspacing='0' cellpadding='3'><tr><th>bin</th><th>products</th></tr>{rows}</table>"

    body = "".join(f"<p>{html.escape(line)}</p>" for line in report_lines(result, query) if not line.startswith("By "))  # those are the tables
    body += table("By year (UTC start)", counts["year"]) + table("By Mars year", counts["mars_year"])
    body += table("By solar longitude (10-degree bins)", counts["solar_longitude"]) + table("By centre latitude (5-degree bins)", counts["centre_latitude"])
    partial = _partial(path)
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>HiRISE find report</title></head><body><h1>HiRISE products found</h1>{body}</body></html>\n")
    os.replace(partial, path)


def write_products_csv(path: str, products: Iterable[Product]) -> None:
    partial = _partial(path)
    names = [name for name, _ in CATALOG_FIELDS] + ["wkt"]
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        for product in products:
            writer.writerow({k: ("" if v is None else v) for k, v in product.as_row().items()})
    os.replace(partial, path)


def _partial(path: str) -> str:
    try:
        from .files import partial_path
    except ImportError:
        from model.files import partial_path
    partial = partial_path(path)
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    return partial


# --- command line ---------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python3 -m model.catalog", description="Find HiRISE RDR products in an index (the paper's window by default).")
    parser.add_argument("source", help="RDRCUMINDEX.LBL (or .TAB), a CSV like hirise_rdr_index.csv.gz, or 'ode'")
    parser.add_argument("--themes", help="hirise_themes.csv.gz, for --theme and the themes field")
    parser.add_argument("--theme", action="append", default=[])
    parser.add_argument("--product-type", default="RED", choices=PRODUCT_TYPES)
    parser.add_argument("--lat", nargs=2, type=float, default=list(PAPER_LATITUDE), metavar=("MIN", "MAX"))
    parser.add_argument("--ls", nargs=2, type=float, default=list(PAPER_LS), metavar=("START", "END"))
    parser.add_argument("--incidence", nargs=2, type=float, metavar=("MIN", "MAX"))
    parser.add_argument("--local-time", nargs=2, type=float, metavar=("START", "END"))
    parser.add_argument("--scale", nargs=2, type=float, metavar=("MIN", "MAX"))
    parser.add_argument("--csv", help="write the products (with WKT footprints) to this CSV")
    parser.add_argument("--report-html")
    parser.add_argument("--report-csv")
    parser.add_argument("--ode-url", default=ODE_URL)
    args = parser.parse_args(argv)
    try:
        query = Query(
            latitude_min=args.lat[0], latitude_max=args.lat[1], ls_start=args.ls[0], ls_end=args.ls[1],
            incidence_min=args.incidence[0] if args.incidence else None, incidence_max=args.incidence[1] if args.incidence else None,
            local_time_start=args.local_time[0] if args.local_time else None, local_time_end=args.local_time[1] if args.local_time else None,
            scale_min=args.scale[0] if args.scale else None, scale_max=args.scale[1] if args.scale else None,
            themes=tuple(args.theme), product_type=args.product_type,
        )
        result = find(args.source, query, args.themes, args.ode_url, log=lambda s: print(s, file=sys.stderr))
        for line in report_lines(result, query):
            print(line)
        if args.csv:
            write_products_csv(args.csv, result.products)
        if args.report_html:
            write_report_html(args.report_html, result, query)
        if args.report_csv:
            write_report_csv(args.report_csv, result)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
