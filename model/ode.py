"""HiRISE RDR products from ODE's REST service (``query=product&ihid=MRO&iid=HIRISE&pt=RDRV11&output=JSON``),
filtered here by the rest of the query.

The JSON shape (ODEResults / Products / Product, Product_files / Product_file with FileName, URL,
KBytes) is written from ODE's documentation as we know it: this code was tested against a local
server answering in that shape, never against ODE itself.
"""

import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from http.client import HTTPException
from typing import Callable, Dict, Iterator, List, Optional, Set

from .errors import CancelledError
from .products import CatalogError, OdeUnavailableError, Product, Query, as_float, observation_of, observing_conditions, product_type_of


ODE_URL = "https://oderest.rsl.wustl.edu/live2/"


def _key(record: Dict, *names):
    lower = {k.lower(): v for k, v in record.items()}
    for name in names:
        value = lower.get(name.lower())
        if value not in (None, ""):
            return value
    return None


def _as_list(value) -> List:
    if value is None or isinstance(value, str):
        return []  # ODE writes "No Products Found" in place of an empty list
    return value if isinstance(value, list) else [value]


def product_from_ode(record: Dict) -> Optional[Product]:
    pdsid = str(_key(record, "pdsid", "PDSID", "Product_id") or "")
    files = _as_list((_key(record, "Product_files") or {}).get("Product_file") if isinstance(_key(record, "Product_files"), dict) else None)
    jp2 = lbl = None
    for item in files:
        name = str(_key(item, "FileName", "URL") or "").upper()
        if name.endswith(".JP2") and jp2 is None:
            jp2 = item
        elif name.endswith(".LBL") and lbl is None:
            lbl = item
    south, north = as_float(_key(record, "Minimum_latitude")), as_float(_key(record, "Maximum_latitude"))
    west, east = as_float(_key(record, "Westernmost_longitude")), as_float(_key(record, "Easternmost_longitude"))
    if not pdsid or None in (south, north, west, east):
        return None
    jp2_url = str(_key(jp2, "URL") or "") if jp2 else ""
    lbl_url = str(_key(lbl, "URL") or "") if lbl else str(_key(record, "LabelURL") or "")
    if not jp2_url and lbl_url:
        jp2_url = re.sub(r"\.LBL$", ".JP2", lbl_url, flags=re.I)
    if not lbl_url and jp2_url:
        lbl_url = re.sub(r"\.JP2$", ".LBL", jp2_url, flags=re.I)
    kbytes = lambda item: int(round(as_float(_key(item, "KBytes")) * 1024)) if item and as_float(_key(item, "KBytes")) is not None else None  # noqa: E731
    return Product(
        product_id=pdsid,
        observation_id=observation_of(pdsid),
        product_type=product_type_of(pdsid),
        minimum_latitude=south,
        maximum_latitude=north,
        westernmost_longitude=west,
        easternmost_longitude=east,
        jp2_url=jp2_url,
        lbl_url=lbl_url,
        **observing_conditions(lambda *names: _key(record, *names)),
        jp2_bytes=kbytes(jp2),
        lbl_bytes=kbytes(lbl),
        size_unit_bytes=1024,
        source="ODE",
    )


def ode_pages(query: Query, base_url: str = ODE_URL, page_size: int = 500, max_pages: int = 200, timeout: float = 60.0,
              opener=None, is_cancelled: Callable[[], bool] = lambda: False, log: Callable[[str], None] = lambda s: None) -> Iterator[Product]:
    """Products from ODE's REST service for the query's latitude/longitude box (the rest is filtered locally)."""
    address = urllib.parse.urlsplit(base_url)
    if address.scheme not in ("http", "https") or not address.netloc:
        raise CatalogError(f"The ODE REST URL {base_url!r} is not a web address: give it whole, with https:// (ODE's own is {ODE_URL}).")
    opener = opener or urllib.request.build_opener()
    south, north, spans = query.bounding_box()
    seen: Set[str] = set()
    for west, east in spans:
        for page in range(max_pages):
            if is_cancelled():
                raise CancelledError("Cancelled by the user; no footprint layer was written.")
            params = OrderedDict(
                query="product", results="fp", output="JSON", target="mars", ihid="MRO", iid="HIRISE", pt="RDRV11",
                minlat=f"{south:g}", maxlat=f"{north:g}", westernlon=f"{west:g}", easternlon=f"{east:g}",
                limit=str(page_size), offset=str(page * page_size),
            )
            url = base_url + ("&" if "?" in base_url else "?") + urllib.parse.urlencode(params)
            try:
                with opener.open(url, timeout=timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as exc:
                raise OdeUnavailableError(f"ODE ({base_url}) answered HTTP {exc.code} {exc.reason}: try again later, or search a local index (RDRCUMINDEX.LBL or the CSV).") from None
            except (urllib.error.URLError, socket.timeout, ConnectionError, OSError, HTTPException) as exc:  # HTTPException: an answer cut off
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                raise OdeUnavailableError(
                    f"ODE's REST service ({base_url}) is not reachable ({reason}). Check the network connection or proxy "
                    "(QGIS: Settings > Options > Network), or search a local index: RDRCUMINDEX.LBL with its .TAB from "
                    "https://hirise-pds.lpl.arizona.edu/PDS/INDEX/, or a CSV like hirise_rdr_index.csv.gz."
                ) from None
            try:
                document = json.loads(payload.decode("utf-8"))
                results = document["ODEResults"]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise OdeUnavailableError(f"ODE ({base_url}) answered something that is not ODE's JSON (ODEResults): check the service URL.") from None
            status = str(results.get("Status", "")).upper()
            if status and status != "SUCCESS":
                raise OdeUnavailableError(f"ODE refused the query: {results.get('Error') or results.get('Status')}. Check the query's limits.")
            products = results.get("Products")
            records = _as_list(products.get("Product") if isinstance(products, dict) else None)
            for record in records:
                product = product_from_ode(record) if isinstance(record, dict) else None
                if product is not None and product.product_id not in seen:
                    seen.add(product.product_id)
                    yield product
            log(f"ODE: {len(records)} products at offset {page * page_size} (longitudes {west:g} to {east:g})")
            if len(records) < page_size:
                break
        else:
            raise CatalogError(f"ODE returned more than {max_pages * page_size} products for longitudes {west:g} to {east:g}: narrow the query (a drawn area or a narrower latitude band).")
