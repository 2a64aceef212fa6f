"""Styles of the output layers: the chunk layer graduated by ice probability, the image summary
outlined by category, the plain chunk grid.

The styles live in resources/styles/*.qml and are applied with loadNamedStyle. They are made
by this module (``write_style_files``) from model/report.py's RAMP, so map, legend and HTML
report share one colour ramp; after changing RAMP or the classes below, regenerate them:

    cd <plugin folder> && QT_QPA_PLATFORM=offscreen /usr/bin/python3 -m processing_provider.styling

How a style reaches the user:
  - every run: postProcessAlgorithm styles the output and stores the style with the data (in a
    GeoPackage as its default style, beside other files as a .qml), so qgis_process, batch runs
    and re-opening the file all show it;
  - in the QGIS GUI: a QgsProcessingLayerPostProcessorInterface styles the layer Processing
    loads into the project (Processing loads file outputs without their default style).
"""

import collections
import os
import re
from typing import List, Optional, Sequence, Tuple

from qgis.core import (
    Qgis,
    QgsCategorizedSymbolRenderer,
    QgsEditorWidgetSetup,
    QgsField,
    QgsFieldConstraints,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsGraduatedSymbolRenderer,
    QgsMapLayer,
    QgsPalLayerSettings,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRasterLayer,
    QgsRendererCategory,
    QgsRendererRange,
    QgsSingleSymbolRenderer,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtCore import QTimer, QVariant
from qgis.PyQt.QtGui import QColor

from .destinations import processing_temp_folder
from .sources import source_path


def _field_types() -> dict:
    """model/schema.py's field kinds as QGIS field types (the algorithms' sinks use them too).

    QgsField takes a QMetaType.Type from QGIS 3.38 on (the QVariant.Type constructor is
    deprecated there, and Qt6's QVariant has no type constants); QGIS 3.22 to 3.36 take only
    QVariant.Type. Both are compared with QgsField.type() by value.
    """
    if Qgis.QGIS_VERSION_INT >= 33800:
        from qgis.PyQt.QtCore import QMetaType

        return {"int": QMetaType.Type.Int, "real": QMetaType.Type.Double, "text": QMetaType.Type.QString, "bool": QMetaType.Type.Bool}
    return {"int": QVariant.Int, "real": QVariant.Double, "text": QVariant.String, "bool": QVariant.Bool}  # qt5-spelling-ok: QGIS < 3.38 only


QVARIANT_TYPES = _field_types()

PLUGIN_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLES_FOLDER = os.path.join(PLUGIN_FOLDER, "resources", "styles")
CHUNKS_QML = os.path.join(STYLES_FOLDER, "chunks.qml")
SUMMARY_QML = os.path.join(STYLES_FOLDER, "summary.qml")
GRID_QML = os.path.join(STYLES_FOLDER, "grid.qml")
PROBABILITY_QML = os.path.join(STYLES_FOLDER, "probability.qml")

# By file name: a run's copy of a style (threshold_styles) stores under the name of the style it copies.
STYLE_NAMES = {
    "chunks.qml": ("HiRISE ice probability", "Chunks graduated by ice probability (HiRISE Ice Patches)"),
    "summary.qml": ("HiRISE image category", "Image footprints outlined by category (HiRISE Ice Patches)"),
    "grid.qml": ("HiRISE chunk grid", "Chunk grid outlines (HiRISE Ice Patches)"),
}

# Probability classes of the chunk style: (low, high, legend text, fill opacity 0..255). The
# paper's thresholds (0.4 hard to identify, 0.6 icy) are class edges; the lowest class is
# transparent, and no fill is opaque: the geologist judges the terrain through the colour.
CHUNK_CLASSES: List[Tuple[float, float, str, int]] = [
    (0.8, 1.0, "0.8 – 1.0  icy", 120),
    (0.6, 0.8, "0.6 – 0.8  icy", 100),
    (0.5, 0.6, "0.5 – 0.6  hard to identify", 80),
    (0.4, 0.5, "0.4 – 0.5  hard to identify", 65),
    (0.2, 0.4, "0.2 – 0.4  not icy", 35),
    (0.0, 0.2, "0.0 – 0.2  not icy", 0),
]
# Classes run from high to low: QGIS gives a value on a shared edge to the first range that
# holds it, so p = 0.6 falls in "icy" and p = 0.4 in "hard to identify", as model/rules.py says.
# A class's fill opacity (0..255) stays within its paper's range whatever the thresholds: a chunk called icy by a low
# ICY_THRESHOLD is not drawn see-through, nor one called not icy by a high one filled like ice.
CLASS_ALPHA_RANGE = {"icy": (100, 255), "hard to identify": (65, 80), "not icy": (0, 35)}
# (outline width in mm, pen style) by class; "not icy" keeps a thin solid line.
OUTLINES = {"icy": ("0.5", "solid"), "hard to identify": ("0.4", "dash")}
# Those outlines are their class's colour darkened (model/report.py's EDGE_SHADE, as the report's quicklook draws them): in the
# fill's own light hue they stood 1.0-1.9 : 1 against mid-grey terrain, so red-green colour-blind readers and greyscale prints
# could not see the one cue that tells hard from icy.


def chunk_classes(icy_threshold: float, hard_low: float) -> List[Tuple[float, float, str, int]]:
    """CHUNK_CLASSES with ICY_THRESHOLD and HARD_LOW among their edges, each range named as model/rules.py
    classes its probabilities: with thresholds other than the paper's, the legend had called a chunk
    'not icy' that its class field and the report call icy. The paper's thresholds give CHUNK_CLASSES."""
    rules = _engine()[2]
    edges = sorted({low for low, _, _, _ in CHUNK_CLASSES} | {1.0} | {t for t in (icy_threshold, hard_low) if 0.0 < t < 1.0})
    classes = []
    for low, high in reversed(list(zip(edges, edges[1:]))):
        name = rules.chunk_class(low, icy_threshold, hard_low)
        alpha = next(alpha for base_low, base_high, _, alpha in CHUNK_CLASSES if base_low <= low < base_high)
        least, most = CLASS_ALPHA_RANGE[name]
        classes.append((low, high, f"{_edge(low)} – {_edge(high)}  {name}", min(max(alpha, least), most)))
    return classes


def _edge(value: float) -> str:
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"

# "bad" is the paper's discarded image: too few icy chunks to keep (0 or 1 by its rule), not an image without ice.
# Each with its own pen as well (value, colour, legend, pen style): good and bad had printed as one grey.
CATEGORY_COLOURS = [("good", "215,25,28", "good: ice clearly present", "solid"), ("hard to identify", "253,174,97", "hard to identify: check by eye", "dash"),
                    ("bad", "43,131,186", "bad: too few icy chunks to keep", "dot")]

LABEL_VALUES = [("icy (1)", 1), ("not icy (0)", 0), ("unclear (-1)", -1)]
VALUE_MAP_NULL = "{2839923C-8B7D-419E-B84B-CA2FE9B80EC7}"  # QGIS's value-map code for NULL


# --- applying styles ----------------------------------------------------------------------

def apply_style(layer: QgsMapLayer, qml: str) -> bool:
    message, ok = layer.loadNamedStyle(qml)
    if ok:
        _follow_truncated_field(layer)
        layer.triggerRepaint()
    return bool(ok)


def _follow_truncated_field(layer: QgsMapLayer) -> None:
    """Shapefiles cut field names to 10 characters ('probability' -> 'probabilit'): classify by the cut name."""
    renderer = layer.renderer() if isinstance(layer, QgsVectorLayer) else None
    if renderer is None or not hasattr(renderer, "classAttribute"):
        return
    names = layer.fields().names()
    attribute = renderer.classAttribute()
    if attribute not in names and attribute[:10] in names:
        renderer.setClassAttribute(attribute[:10])


def _file_path(layer: QgsVectorLayer) -> Optional[str]:
    path = source_path(layer.source())
    return path if os.path.isfile(path) else None


def store_style(layer: QgsVectorLayer, qml: str, feedback=None) -> Optional[str]:
    """Apply the style and keep it with the data so it comes back on every load.

    GeoPackage / SpatiaLite: saved in the layer_styles table as the layer's default style.
    Other files (Shapefile, GeoJSON, ...): a .qml beside the file, which QGIS loads as default.
    Returns where it went, or None (e.g. a memory layer: styled only).
    """
    if isinstance(layer, QgsVectorLayer) and not layer.isSpatial():
        return None  # a CSV (or dBase) table, without polygons to style: the algorithm has warned of it already
    if not apply_style(layer, qml):
        if feedback:
            feedback.pushWarning(f"Could not apply the style {qml}.")
        return None
    name, description = STYLE_NAMES.get(os.path.basename(qml), (os.path.splitext(os.path.basename(qml))[0], ""))
    provider = layer.dataProvider()
    if provider is not None and provider.isSaveAndLoadStyleToDatabaseSupported():
        _delete_stored_styles(layer, name)
        error = layer.saveStyleToDatabase(name, description, True, "")
        if error:
            if feedback:
                feedback.pushWarning(f"Could not store the style in {layer.source()}: {error}")
            return None
        return f"{layer.source()} (default style '{name}')"
    path = _file_path(layer)
    if path:
        sidecar = os.path.splitext(path)[0] + ".qml"
        message, ok = layer.saveNamedStyle(sidecar)
        return sidecar if ok else None
    return None


def _delete_stored_styles(layer: QgsVectorLayer, name: str) -> None:
    """Delete the layer's stored styles called `name`, left by an earlier run into the same table.

    Saving over one makes QGIS ask in a modal dialog whether to overwrite it, which nobody can
    answer in qgis_process or a batch (it waits for ever); the user's other styles stay.
    """
    related, ids, names, _descriptions, _error = layer.listStylesInDatabase()
    for style_id, style_name in zip(ids[:related], names[:related]):
        if style_name == name:
            layer.deleteStyleFromDatabase(style_id)


def style_output(destination: str, qml: str, context, feedback=None) -> None:
    """Style a Processing output given by its destination id (postProcessAlgorithm)."""
    if not destination:
        return
    # A temporary (memory) output is a layer in the context's store: style that very layer.
    layer = context.getMapLayer(destination) if context is not None else None
    if isinstance(layer, QgsVectorLayer):
        apply_style(layer, qml)
        if layer.providerType() == "memory":
            return
    stored = QgsVectorLayer(destination, "styled output", "ogr")
    if stored.isValid():
        where = store_style(stored, qml, feedback)
        if where and feedback:
            feedback.pushInfo(f"Style stored in {where}")
        del stored


# Outputs styled with these become the active layer once the Processing GUI has loaded them: the
# chunk layer is what the labelling tools (Mark icy, ...) act on, not the summary loaded after it.
ACTIVE_AFTER_LOADING = {os.path.basename(CHUNKS_QML)}


def make_active_when_loaded(layer: QgsMapLayer) -> None:
    """Make `layer` QGIS's active layer once Processing has finished loading a run's outputs.

    Processing adds the outputs one after the other, and QGIS makes each added layer the active
    one, so the last loaded wins: Detect's summary. Newer QGIS versions then activate a layer of
    their own choosing at the end of loading. A zero-delay timer runs after all of that, when the
    event loop next turns; it finds the layer again by id, so a layer removed meanwhile is skipped.
    """
    layer_id = layer.id()
    QTimer.singleShot(0, lambda: _activate(layer_id))


def _activate(layer_id: str) -> None:
    from qgis import utils

    interface = getattr(utils, "iface", None)
    layer = QgsProject.instance().mapLayer(layer_id)
    if interface is not None and layer is not None:
        interface.setActiveLayer(layer)


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles an output layer once the Processing GUI has loaded it into the project.

    SIP keeps only the C++ side alive once the post-processor is handed to a context, so the
    Python object must be referenced elsewhere or postProcessLayer is never reached (QuickOSM
    and others keep a class attribute for that). One object per output layer is needed, since
    a batch run loads several; ``create`` keeps the most recent ones in a bounded deque.
    """

    _alive: "collections.deque" = collections.deque(maxlen=256)

    def __init__(self, qml: str):
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS's name)
        if isinstance(layer, (QgsVectorLayer, QgsRasterLayer)):  # the ice-probability raster had loaded grey and opaque over all
            apply_style(layer, self.qml)
            if os.path.basename(self.qml) in ACTIVE_AFTER_LOADING:
                make_active_when_loaded(layer)

    @classmethod
    def create(cls, qml: str) -> "StylePostProcessor":
        processor = cls(qml)
        cls._alive.append(processor)
        return processor


def set_post_processor(context, destination: str, qml: str) -> None:
    """Style `destination` when the GUI loads it (no effect in qgis_process or plain processing.run)."""
    if destination and context.willLoadLayerOnCompletion(destination):
        context.layerToLoadOnCompletionDetails(destination).setPostProcessor(StylePostProcessor.create(qml))


# --- making the .qml files ------------------------------------------------------------------

def _engine():
    try:
        from ..model import report, rules, schema
    except ImportError:  # processing_provider imported as a top-level package (python3 -m processing_provider.styling)
        from model import report, rules, schema
    return report, schema, rules


def build_chunk_renderer(classes: Sequence[Tuple[float, float, str, int]] = CHUNK_CLASSES) -> QgsGraduatedSymbolRenderer:
    """The chunk classes in the colours of the report's ramp (model/report.py), so map, legend and HTML agree.
    Every chunk is drawn over its whole footprint, overlapping ones of a dense grid too: drawn over their central squares
    only, a click on a square had selected (and Mark icy labelled) another chunk, as QGIS's tools pick by footprint."""
    report = _engine()[0]
    ramp = report.RAMP
    ranges = []
    for low, high, text, alpha in classes:
        r, g, b = report.ramp_colour((low + high) / 2)
        # The class in the outline as well as the colour, for readers who do not tell the ramp's hues apart and over
        # terrain that darkens a see-through fill: hard to identify dashed, icy bolder, both dark (OUTLINES).
        name = text.split("  ", 1)[1]
        outline_width, outline_style = OUTLINES.get(name, ("0.2" if alpha == 0 else "0.3", "solid"))
        outline = f"{r},{g},{b},{110 if alpha == 0 else 220}"
        if name in OUTLINES:
            outline = ",".join(str(round(c * report.EDGE_SHADE)) for c in (r, g, b)) + ",255"
        symbol = QgsFillSymbol.createSimple(
            {"color": f"{r},{g},{b},{alpha}", "style": "solid" if alpha else "no", "outline_color": outline, "outline_width": outline_width,
             "outline_style": outline_style, "outline_width_unit": "MM", "joinstyle": "miter"}
        )
        ranges.append(QgsRendererRange(low, high, symbol, text))
    renderer = QgsGraduatedSymbolRenderer("probability", ranges)
    c0, c1 = ramp[0][1], ramp[-1][1]
    stops = [QgsGradientStop(p, QColor(*c)) for p, c in ramp[1:-1]]
    renderer.setSourceColorRamp(QgsGradientColorRamp(QColor(*c0), QColor(*c1), False, stops))
    return renderer


# The smallest chunk (mm on screen) whose label is drawn.
LABEL_MIN_CHUNK_MM = 4.0


def _label_expression() -> str:
    return "CASE WHEN \"label\" = 1 THEN 'icy' WHEN \"label\" = 0 THEN 'not icy' WHEN \"label\" = -1 THEN '?' END"


def _labelling() -> QgsVectorLayerSimpleLabeling:
    settings = QgsPalLayerSettings()
    settings.fieldName = _label_expression()
    settings.isExpression = True
    settings.placement = QgsPalLayerSettings.Placement.OverPoint
    settings.centroidWhole = True  # at the chunk's own centre: at the visible part's, a chunk off the canvas had labelled a neighbour
    # A season's survey drawn whole: every chunk placed as an obstacle and each labelled chunk tried at any size took 17-46 s for 52,000
    # chunks, and again at every pan. Chunks under LABEL_MIN_CHUNK_MM on screen, too small for the word, are not labelled.
    obstacles = settings.obstacleSettings()
    obstacles.setIsObstacle(False)
    settings.setObstacleSettings(obstacles)
    thinning = settings.thinningSettings()
    thinning.setMinimumFeatureSize(LABEL_MIN_CHUNK_MM)
    settings.setThinningSettings(thinning)
    text = QgsTextFormat()
    text.setSize(9)
    text.setColor(QColor(20, 20, 20))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(1.0)
    buffer.setColor(QColor(255, 255, 255, 220))
    text.setBuffer(buffer)
    settings.setFormat(text)
    return QgsVectorLayerSimpleLabeling(settings)


def _memory_layer(fields: Sequence[Tuple[str, object]], geometry: str = "Polygon") -> QgsVectorLayer:
    """A memory layer with `fields`: [(name, one of QVARIANT_TYPES' values)]."""
    layer = QgsVectorLayer(geometry, "style", "memory")
    layer.dataProvider().addAttributes([QgsField(name, kind) for name, kind in fields])
    layer.updateFields()
    return layer


def _schema_layer(fields, geometry: str = "Polygon") -> QgsVectorLayer:
    return _memory_layer([(name, QVARIANT_TYPES[kind]) for name, kind in fields], geometry)


def write_style_files(folder: str = STYLES_FOLDER) -> List[str]:
    """(Re)write chunks.qml, summary.qml and grid.qml from the RAMP and the classes above."""
    os.makedirs(folder, exist_ok=True)
    written = []

    chunks = _schema_layer(_engine()[1].DETECTION_FIELDS)
    chunks.setRenderer(build_chunk_renderer())
    chunks.setLabeling(_labelling())
    chunks.setLabelsEnabled(True)
    label_index = chunks.fields().indexOf("label")
    value_map = [{text: value} for text, value in LABEL_VALUES] + [{"(not labelled)": VALUE_MAP_NULL}]
    chunks.setEditorWidgetSetup(label_index, QgsEditorWidgetSetup("ValueMap", {"map": value_map}))
    chunks.setFieldAlias(label_index, "label (1 icy, 0 not icy, -1 unclear)")
    # flagged, not refused, in the form and the attribute table: the field calculator wrote 2 or -5 without a sign
    chunks.setConstraintExpression(label_index, '"label" IS NULL OR "label" IN (1, 0, -1)', "1 icy, 0 not icy, -1 unclear, or empty")
    chunks.setFieldConstraint(label_index, QgsFieldConstraints.Constraint.ConstraintExpression, QgsFieldConstraints.ConstraintStrength.ConstraintStrengthSoft)
    form = chunks.editFormConfig()
    for index, field in enumerate(chunks.fields()):
        form.setReadOnly(index, field.name() != "label")
    chunks.setEditFormConfig(form)
    chunks.setDisplayExpression("\"image_id\" || ' r' || \"row\" || ' c' || \"col\" || '  p=' || format_number(\"probability\", 2)")
    written.append(_save(chunks, os.path.join(folder, "chunks.qml")))

    text, real = QVARIANT_TYPES["text"], QVARIANT_TYPES["real"]
    summary = _memory_layer([("image_id", text), ("category", text), ("mean_probability", real)], "MultiPolygon")
    categories = []
    for value, colour, text, pen in CATEGORY_COLOURS:
        symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": colour + ",255", "outline_width": "0.8", "outline_width_unit": "MM", "outline_style": pen})
        categories.append(QgsRendererCategory(value, symbol, text))
    other = QgsFillSymbol.createSimple({"style": "no", "outline_color": "120,120,120,255", "outline_width": "0.6", "outline_width_unit": "MM", "outline_style": "dash dot"})
    categories.append(QgsRendererCategory("", other, "other"))
    summary.setRenderer(QgsCategorizedSymbolRenderer("category", categories))
    summary.setDisplayExpression("\"image_id\" || ': ' || \"category\"")
    written.append(_save(summary, os.path.join(folder, "summary.qml")))

    grid = _schema_layer(_engine()[1].CHUNK_GRID_FIELDS)
    grid.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple({"style": "no", "outline_color": "255,255,0,200", "outline_width": "0.26", "outline_width_unit": "MM"})))
    grid.setDisplayExpression("\"image_id\" || ' r' || \"row\" || ' c' || \"col\"")
    written.append(_save(grid, os.path.join(folder, "grid.qml")))
    return written


def threshold_styles(icy_threshold: float, hard_low: float) -> Tuple[str, str]:
    """(chunk layer style, probability raster style) for these thresholds: CHUNKS_QML and PROBABILITY_QML for the
    paper's, else copies whose classes follow them (chunk_classes), made once in Processing's temporary folder."""
    classes = chunk_classes(icy_threshold, hard_low)
    if classes == CHUNK_CLASSES:
        return CHUNKS_QML, PROBABILITY_QML
    # a folder QGIS could not make had put these in the current folder, or failed the run after its work with a traceback
    folder = os.path.join(processing_temp_folder(), f"hiriseice-styles-icy{icy_threshold:g}-hard{hard_low:g}")
    chunks, probability = os.path.join(folder, os.path.basename(CHUNKS_QML)), os.path.join(folder, os.path.basename(PROBABILITY_QML))
    if not (os.path.isfile(chunks) and os.path.isfile(probability)):
        os.makedirs(folder, exist_ok=True)
        layer = _schema_layer(_engine()[1].DETECTION_FIELDS)
        layer.loadNamedStyle(CHUNKS_QML)
        layer.setRenderer(build_chunk_renderer(classes))
        _save(layer, chunks)
        with open(PROBABILITY_QML, encoding="utf-8") as handle:
            text = handle.read()
        items = re.findall(r"^ *<item .*/>\n", text, flags=re.MULTILINE)
        with open(probability, "w", encoding="utf-8") as handle:
            handle.write(text.replace("".join(items), "".join(_raster_item(c, last=c is classes[0]) for c in reversed(classes))))
    return chunks, probability


def _raster_item(chunk_class: Tuple[float, float, str, int], last: bool) -> str:
    """A DISCRETE colour ramp item of probability.qml for a chunk class: it colours the values up to its own."""
    low, high, text, alpha = chunk_class
    r, g, b = _engine()[0].ramp_colour((low + high) / 2)
    opacity = 0 if alpha == 0 else 90 if text.endswith("not icy") else 255
    label = text + (" (not drawn)" if opacity == 0 else "")
    if opacity == 0:  # QGIS's legend shows an item's colour without its alpha: white says "nothing drawn", blue had not
        r = g = b = 255
    return f'          <item alpha="{opacity}" value="{"inf" if last else f"{high:g}"}" label="{label}" color="#{r:02x}{g:02x}{b:02x}"/>\n'


def _save(layer: QgsVectorLayer, path: str) -> str:
    message, ok = layer.saveNamedStyle(path)
    if not ok:
        raise RuntimeError(f"could not write {path}: {message}")
    return path


if __name__ == "__main__":
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    for written_path in write_style_files():
        print(written_path)
    app.exitQgis()
