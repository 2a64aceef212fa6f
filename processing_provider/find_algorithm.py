"""hiriseice:find - HiRISE RDR footprints from a local index or ODE (model/catalog.py), in-process."""

from qgis.core import (
    NULL,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsWkbTypes,
)

from .algorithm import HiriseIceAlgorithm
from .common import features_from_dicts, layer_crs, make_fields, write_sink
from .destinations import file_destination, replacing_outputs
from .engine import catalog, errors, ode, productindex, products, schema



def mars_geographic_crs() -> QgsCoordinateReferenceSystem:
    """Mars geographic, longitudes 0 to 360 east (products.MARS_GEOGCS_WKT says why not IAU_2015:49900)."""
    return QgsCoordinateReferenceSystem.fromWkt(products.MARS_GEOGCS_WKT)


def is_mars(crs: QgsCoordinateReferenceSystem) -> bool:
    try:
        body = crs.celestialBodyName()  # QGIS >= 3.20 with PROJ >= 8.1
    except (AttributeError, Exception):
        body = ""
    if body and body.lower() == "mars":
        return True
    text = (crs.toProj() + " " + crs.toWkt()).lower()
    return "3396" in text or "mars" in text


def optional_number(algorithm, parameters, name, context):
    """The number given; the parameter's default where it is absent; None (no limit) where it is given empty."""
    if name not in parameters:
        value = algorithm.parameterDefinition(name).defaultValue()
        return None if value is None else float(value)
    value = parameters.get(name)
    # qgis_process gives NAME= as a NULL QVariant, which parameterAsDouble reads as the default
    if value is None or value == NULL or (isinstance(value, str) and not value.strip()):
        return None
    return algorithm.parameterAsDouble(parameters, name, context)


# A drawn area's edges are cut into pieces no longer than its extent over this before they are
# turned into longitudes and latitudes: a whole-planet strip keeps pieces of 22.5 degrees.
AREA_EDGE_PIECES = 16


class FindAlgorithm(HiriseIceAlgorithm):
    NAME = "find"
    DISPLAY_NAME = "Find HiRISE observations"
    GROUP = "Data preparation"
    GROUP_ID = "preparation"

    SOURCE = "SOURCE"
    INDEX = "INDEX"
    ODE_URL = "ODE_URL"
    THEMES_FILE = "THEMES_FILE"
    THEMES = "THEMES"
    PRODUCT_TYPE = "PRODUCT_TYPE"
    LAT_MIN = "LAT_MIN"
    LAT_MAX = "LAT_MAX"
    LS_START = "LS_START"
    LS_END = "LS_END"
    INCIDENCE_MIN = "INCIDENCE_MIN"
    INCIDENCE_MAX = "INCIDENCE_MAX"
    LOCAL_TIME_START = "LOCAL_TIME_START"
    LOCAL_TIME_END = "LOCAL_TIME_END"
    SCALE_MIN = "SCALE_MIN"
    SCALE_MAX = "SCALE_MAX"
    AREA = "AREA"
    SELECTED_ONLY = "SELECTED_ONLY"
    OUTPUT = "OUTPUT"
    REPORT = "REPORT"
    REPORT_CSV = "REPORT_CSV"
    COUNT = "COUNT"
    OUTPUT_FIELDS = {OUTPUT: schema.CATALOG_FIELDS}

    SOURCES = ["Local index (RDRCUMINDEX.LBL/.TAB or CSV)", "ODE REST service (internet)"]

    def shortHelpString(self):
        return self.tr(
            "<p>Finds HiRISE RDR products and draws their footprints, with the JP2 and label URLs that "
            "<i>Download HiRISE products</i> fetches.</p>"
            "<p><b>Source</b>: a local index, either the PDS cumulative index <tt>RDRCUMINDEX.LBL</tt> with "
            "<tt>RDRCUMINDEX.TAB</tt> beside it (https://hirise-pds.lpl.arizona.edu/PDS/INDEX/, downloaded once), or a CSV like "
            "<tt>hirise_rdr_index.csv.gz</tt>; left empty, a small real extract of the paper's window bundled with the plugin "
            "(a demo, not the archive). Or ODE's REST service, which needs the internet.</p>"
            "<p><b>Defaults are the paper's window</b>: centre latitude -60 to -40 (set -70 for the wider band) and "
            "solar longitude 140 to 200. A window whose start is greater than its end wraps (Ls 350 to 10; local time 22 to 2). "
            "Empty limits are not applied. The map scale needs an index with MAP_SCALE (RDRCUMINDEX or ODE; the CSV has none). "
            "Science themes (comma-separated, any of them) need the themes CSV (FILE_NAME,THEME).</p>"
            "<p><b>Area</b> (optional): polygons in any Mars CRS; footprints overlapping them are kept, also across 0/360 degrees "
            "longitude. The latitude band still applies: widen it to search by area alone.</p>"
            "<p>Output: one footprint per product in a Mars geographic CRS (the sphere of IAU_2015:49900, longitudes east, 0 to 360, so that it draws over the images in their own CRS; a footprint "
            "across the prime meridian ends past 360), with the index's attributes, jp2_url, lbl_url and the file sizes where the "
            "source gives them (ODE). The log, and the optional HTML and CSV reports, count the products by year, Mars year and Ls bin.</p>"
        )

    def initAlgorithm(self, config=None):
        Number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterEnum(self.SOURCE, self.tr("Source"), self.SOURCES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFile(self.INDEX, self.tr("Local index (RDRCUMINDEX.LBL or .TAB, or CSV; empty = bundled demo extract)"), optional=True))
        self.addParameter(QgsProcessingParameterString(self.ODE_URL, self.tr("ODE REST URL"), defaultValue=ode.ODE_URL, optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.PRODUCT_TYPE, self.tr("Product type"), list(products.PRODUCT_TYPES), defaultValue=0))
        self.addParameter(Number(self.LAT_MIN, self.tr("Centre latitude from (paper: -60; -70 for the wider band)"), Number.Type.Double, products.PAPER_LATITUDE[0], optional=True, minValue=-90, maxValue=90))
        self.addParameter(Number(self.LAT_MAX, self.tr("Centre latitude to"), Number.Type.Double, products.PAPER_LATITUDE[1], optional=True, minValue=-90, maxValue=90))
        self.addParameter(Number(self.LS_START, self.tr("Solar longitude from (degrees)"), Number.Type.Double, products.PAPER_LS[0], optional=True, minValue=0, maxValue=360))
        self.addParameter(Number(self.LS_END, self.tr("Solar longitude to (wraps when smaller than 'from')"), Number.Type.Double, products.PAPER_LS[1], optional=True, minValue=0, maxValue=360))
        self.addParameter(Number(self.INCIDENCE_MIN, self.tr("Incidence angle from (degrees)"), Number.Type.Double, None, optional=True, minValue=0, maxValue=180))
        self.addParameter(Number(self.INCIDENCE_MAX, self.tr("Incidence angle to (degrees)"), Number.Type.Double, None, optional=True, minValue=0, maxValue=180))
        self.addParameter(Number(self.LOCAL_TIME_START, self.tr("Local time from (hours)"), Number.Type.Double, None, optional=True, minValue=0, maxValue=24))
        self.addParameter(Number(self.LOCAL_TIME_END, self.tr("Local time to (hours)"), Number.Type.Double, None, optional=True, minValue=0, maxValue=24))
        self.addParameter(Number(self.SCALE_MIN, self.tr("Map scale from (m/pixel)"), Number.Type.Double, None, optional=True, minValue=0))
        self.addParameter(Number(self.SCALE_MAX, self.tr("Map scale to (m/pixel)"), Number.Type.Double, None, optional=True, minValue=0))
        self.addParameter(QgsProcessingParameterFile(self.THEMES_FILE, self.tr("Science themes CSV (FILE_NAME,THEME)"), optional=True))
        self.addParameter(QgsProcessingParameterString(self.THEMES, self.tr("Science themes (comma-separated, any of them)"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.AREA, self.tr("Area (polygons in a Mars CRS)"), [QgsProcessing.SourceType.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterBoolean(self.SELECTED_ONLY, self.tr("Area: selected polygons only"), False))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("HiRISE footprints"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFileDestination(self.REPORT, self.tr("Report (HTML)"), "HTML files (*.html)", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(self.REPORT_CSV, self.tr("Counts by year and Ls (CSV)"), "CSV files (*.csv)", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.COUNT, self.tr("Number of products found")))
        for name in (self.ODE_URL, self.THEMES_FILE, self.THEMES, self.INCIDENCE_MIN, self.INCIDENCE_MAX, self.LOCAL_TIME_START, self.LOCAL_TIME_END, self.SCALE_MIN, self.SCALE_MAX, self.SELECTED_ONLY):
            definition = self.parameterDefinition(name)
            definition.setFlags(definition.flags() | definition.Flag.FlagAdvanced)

    def _areas(self, parameters, context, feedback, target):
        """(outer rings, holes) of the AREA's polygons in Mars longitudes and latitudes."""
        if not parameters.get(self.AREA):
            return (), ()
        source = self.parameterAsSource(parameters, self.AREA, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.AREA))
        crs = source.sourceCrs()
        if not crs.isValid():  # QGIS 3.22 cannot read back the IAU CRS it wrote into a GeoPackage (Find's own output)
            layer = self.parameterAsVectorLayer(parameters, self.AREA, context)
            crs = layer_crs(layer) if layer is not None else crs
        if not crs.isValid():
            raise QgsProcessingException("The area layer has no CRS: assign its Mars CRS (e.g. IAU_2015:49900) and run again.")
        if not is_mars(crs):  # PROJ will not transform between bodies: an Earth CRS here is a slip
            raise QgsProcessingException(f"The area layer's CRS ({crs.authid() or crs.description()}) is not a Mars CRS: draw the area in a Mars CRS such as IAU_2015:49900.")
        transform = QgsCoordinateTransform(crs, target, context.transformContext())
        rings, holes = [], []
        features = source.getFeatures(QgsFeatureRequest())
        if self.parameterAsBoolean(parameters, self.SELECTED_ONLY, context):
            layer = self.parameterAsVectorLayer(parameters, self.AREA, context)
            if layer is None or not layer.selectedFeatureCount():
                raise QgsProcessingException("SELECTED_ONLY is set but no polygon of the area layer is selected: select the polygons to search, "
                                             "or switch SELECTED_ONLY off to search them all.")
            features = layer.getSelectedFeatures()
        for feature in features:
            geometry = feature.geometry()
            if geometry.isNull():
                continue
            # Longitude/latitude edges follow the map's: a long edge is cut into pieces first, so none is
            # taken the short way round (a 200-degree edge) and a polar CRS's curves keep their shape.
            extent = geometry.boundingBox()
            geometry = geometry.densifyByDistance(max(extent.width(), extent.height()) / AREA_EDGE_PIECES)
            try:
                geometry.transform(transform)
            except Exception as exc:  # QgsCsException
                raise QgsProcessingException(f"The area could not be transformed to Mars longitude/latitude ({exc}): check the area layer's CRS.") from None
            parts = geometry.asMultiPolygon() if geometry.isMultipart() else [geometry.asPolygon()]
            for polygon in parts:
                if polygon and len(polygon[0]) >= 4:
                    rings.append([(p.x(), p.y()) for p in polygon[0][:-1]])
                    holes.extend([(p.x(), p.y()) for p in ring[:-1]] for ring in polygon[1:] if len(ring) >= 4)
        if not rings:
            raise QgsProcessingException("The area layer has no polygon: draw at least one, or leave the area empty.")
        feedback.pushInfo(f"Area: {len(rings)} polygon(s)" + (f" with {len(holes)} hole(s)" if holes else ""))
        return tuple(rings), tuple(holes)

    def processAlgorithm(self, parameters, context, feedback):
        target = mars_geographic_crs()
        self.warn_of_what_formats_drop(parameters, feedback)
        source_kind = self.parameterAsEnum(parameters, self.SOURCE, context)
        index = self.parameterAsFile(parameters, self.INDEX, context)
        if source_kind == 1:
            source = "ode"
        elif index:
            source = index
        else:
            source = productindex.BUNDLED_EXTRACT
            feedback.pushWarning(
                "No index given: searching the bundled demo extract (235 real observations of the paper's window), not the archive. "
                "Give RDRCUMINDEX.LBL or the full index CSV for a real search."
            )
        themes_text = self.parameterAsString(parameters, self.THEMES, context)
        product_type = products.PRODUCT_TYPES[self.parameterAsEnum(parameters, self.PRODUCT_TYPE, context)]
        number = lambda name: optional_number(self, parameters, name, context)  # noqa: E731
        try:
            if feedback.isCanceled():
                raise errors.CancelledError("Cancelled by the user; no footprint layer was written.")
            areas, holes = self._areas(parameters, context, feedback, target)
            query = products.Query(
                latitude_min=number(self.LAT_MIN), latitude_max=number(self.LAT_MAX), ls_start=number(self.LS_START), ls_end=number(self.LS_END),
                incidence_min=number(self.INCIDENCE_MIN), incidence_max=number(self.INCIDENCE_MAX),
                local_time_start=number(self.LOCAL_TIME_START), local_time_end=number(self.LOCAL_TIME_END),
                scale_min=number(self.SCALE_MIN), scale_max=number(self.SCALE_MAX),
                themes=tuple(t for t in themes_text.split(",")) if themes_text else (), product_type=product_type,
                areas=areas, area_holes=holes,
            )
            result = catalog.find(
                source, query, self.parameterAsFile(parameters, self.THEMES_FILE, context) or None,
                ode_url=self.parameterAsString(parameters, self.ODE_URL, context) or ode.ODE_URL,
                is_cancelled=feedback.isCanceled, log=feedback.pushInfo,
            )
            for line in catalog.report_lines(result, query):
                feedback.pushInfo(line)
            report = self.parameterAsFileOutput(parameters, self.REPORT, context) if parameters.get(self.REPORT) else ""
            report_csv = self.parameterAsFileOutput(parameters, self.REPORT_CSV, context) if parameters.get(self.REPORT_CSV) else ""
            replacing_outputs()
            if report:
                catalog.write_report_html(report, result, query)
            if report_csv:
                catalog.write_report_csv(report_csv, result)
        except errors.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        except OSError as exc:
            raise QgsProcessingException(f"Could not read the index or write the report: {exc}") from None

        fields = make_fields(schema.CATALOG_FIELDS)
        on_disk = file_destination(self.OUTPUT, self.sink_destination(parameters, self.OUTPUT, context), vector=True)
        destination = write_sink(self, parameters, self.OUTPUT, context, fields, QgsWkbTypes.Type.Polygon, target,
                                 features_from_dicts([p.as_row() for p in result.products], fields, "wkt"), "footprint", on_disk)
        if not destination:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        results = {self.OUTPUT: destination, self.COUNT: len(result.products)}
        if report:
            results[self.REPORT] = report
        if report_csv:
            results[self.REPORT_CSV] = report_csv
        return results
