"""The labelling review dock: step through the chunks of a detect layer, see each on the map, and
label it with one key press.

Order: review_rank (the chunks worth labelling first, model/review.py), probability (highest
first) or position (chunk_id). Keys, while the dock has the focus: 1 icy, 0 not icy, U unclear
(each one undo command, written by labelling.mark_selected, then the next chunk); N or Right next,
P or Left previous. "Retrain with these labels" opens hiriseice:train prefilled.

The functions above ReviewDock hold the logic without widgets, so tests can check them directly.
"""

import functools
import glob
import math
import os
import types
from typing import Callable, Dict, List, Optional, Set, Tuple

from qgis.core import NULL, Qgis, QgsCoordinateTransform, QgsExpression, QgsFeatureRequest, QgsProject, QgsRasterLayer, QgsVectorLayer, QgsWkbTypes
from qgis.gui import QgsDockWidget, QgsRubberBand
from qgis.PyQt.QtCore import QEvent, QLocale, QObject, Qt, QTimer
from qgis.PyQt.QtGui import QColor, QKeySequence
from qgis.PyQt.QtWidgets import QComboBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from .labelling import ICY, LABEL_FIELD, NAMES, NOT_ICY, UNCLEAR, LabellingError, how_to_keep_labels, is_temporary, mark_selected, source_path

TITLE = "HiRISE Ice Patches: review labels"
TRAIN_ALGORITHM = "hiriseice:train"
# Shows the dock, or brings the keys back to it where it is open (plugin.py). Free in QGIS 3.22 and on the common desktops:
# Ctrl+Alt+R is QGIS's Results Viewer, and Ctrl+Alt+L locks the session on KDE, Xfce and Cinnamon before QGIS sees it.
REVIEW_SHORTCUT = "Ctrl+Shift+K"
ORDER_REVIEW_RANK, ORDER_PROBABILITY, ORDER_POSITION = "review_rank", "probability", "position"
ORDERS = (
    (ORDER_REVIEW_RANK, "review rank (most useful first)"),
    (ORDER_PROBABILITY, "probability (highest first)"),
    (ORDER_POSITION, "position (chunk_id)"),
)
REQUIRED_FIELDS = ("chunk_id", "probability", LABEL_FIELD)
# The map shows this many chunk widths around the chunk on each side.
MARGIN = 1.0
GONE_FROM_THE_FILE = ("This chunk's row is gone from the file (another program rewrote the layer: a survey rescoring its image?), so it was "
                      "not labelled, and the review order was read again. Labels of rows gone cannot be saved: give them to the chunks there now.")
# Label changes (Mark icy on a selection, the field calculator) beyond which the counts are read whole rather than chunk by chunk.
RECOUNT_ABOVE_CHANGES = 500
# While the dock is shown, selected features are filled with this (QGIS's default yellow is
# opaque and would hide the chunk being judged); the chunk is outlined by OUTLINE instead.
SELECTION_COLOUR = QColor(255, 255, 0, 35)
OUTLINE = QColor(255, 230, 0)
POLYGON = Qgis.GeometryType.Polygon if hasattr(Qgis, "GeometryType") else QgsWkbTypes.GeometryType.PolygonGeometry


def _code(key) -> int:
    """A key as the int QKeyEvent.key() returns (Qt6's enums are not ints)."""
    return int(getattr(key, "value", key))


LABEL_KEYS = {_code(Qt.Key.Key_1): ICY, _code(Qt.Key.Key_0): NOT_ICY, _code(Qt.Key.Key_U): UNCLEAR}
NEXT_KEYS = (_code(Qt.Key.Key_N), _code(Qt.Key.Key_Right))
PREVIOUS_KEYS = (_code(Qt.Key.Key_P), _code(Qt.Key.Key_Left))


# --- logic without widgets ------------------------------------------------------------------------


def is_chunk_layer(layer) -> bool:
    """A vector layer with the fields the dock needs (a Detect ice patches output)."""
    return isinstance(layer, QgsVectorLayer) and layer.isValid() and all(layer.fields().lookupField(n) >= 0 for n in REQUIRED_FIELDS)


def _number(value) -> Optional[float]:
    if value is None or value == NULL:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def label_value(value) -> Optional[int]:
    """A stored label as 1, 0 or -1 (unclear), read as training reads it (yes / no, true / false ... too);
    None if empty, or a value training would refuse."""
    if value is None or value == NULL or (isinstance(value, float) and math.isnan(value)):
        return None
    labels = _engine().labels
    try:
        label = labels.parse_label(value)
    except labels.LabelError:
        return None
    if label is not None:
        return label
    return None if str(value).strip().lower() in labels.EMPTY_WORDS else UNCLEAR


# The fields that say where a chunk lies in its image: rows of one image that share them are one chunk, as training reads
# them; chunk_id alone is one only on one grid (two detect runs at other chunk sizes number other ground alike).
WINDOW_FIELDS = ("x_off", "y_off", "width", "height")


def _window_fields(layer: QgsVectorLayer) -> List[str]:
    """WINDOW_FIELDS where the layer has them all, else chunk_id (a layer made without them)."""
    return list(WINDOW_FIELDS) if all(layer.fields().lookupField(name) >= 0 for name in WINDOW_FIELDS) else ["chunk_id"]


def _same_chunk(feature, image: str, window_fields: List[str]) -> Optional[Tuple]:
    """Where the feature's chunk lies (its image and window_fields' values), or None where one is missing."""
    values = tuple(_number(feature[name]) for name in window_fields)
    return None if None in values else (image, *values)


def review_order(layer: QgsVectorLayer, order: str = ORDER_REVIEW_RANK, repeated: Optional[Set[Tuple]] = None) -> List[int]:
    """Feature ids in review order, one image after another (a survey's layer, repeat images of a site: review_rank and
    chunk_id count within an image, and walking them across images put three dates' chunk 0 in a row). Chunks without
    the sort value (NULL) come last; ties, and the position order, go by chunk_id, then feature id. ``repeated``, where given,
    is filled with where the chunks lie (_same_chunk) that have more than one row (two geologists' layers merged)."""
    if order not in dict(ORDERS):
        raise ValueError(f"order is one of {', '.join(dict(ORDERS))}, not {order!r}")
    if order == ORDER_REVIEW_RANK and layer.fields().lookupField("review_rank") < 0:
        raise ValueError(f"'{layer.name()}' has no review_rank field (made by an older Detect); order by probability or position.")
    names = ["chunk_id"] + ({ORDER_REVIEW_RANK: ["review_rank"], ORDER_PROBABILITY: ["probability"]}.get(order, []))
    with_images = layer.fields().lookupField("image_id") >= 0
    window_fields = _window_fields(layer) if repeated is not None else []
    read = list(dict.fromkeys(names + ["image_id"] * with_images + window_fields))
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry).setSubsetOfAttributes(read, layer.fields())
    keys, seen = [], set()
    for feature in layer.getFeatures(request):
        image = str(feature["image_id"]) if with_images and feature["image_id"] not in (None, NULL) else ""
        chunk = _number(feature["chunk_id"])
        chunk = chunk if chunk is not None else float("inf")
        where = _same_chunk(feature, image, window_fields) if repeated is not None else None
        if where is not None:
            if where in seen:
                repeated.add(where)
            seen.add(where)
        if order == ORDER_POSITION:
            keys.append(((image, chunk, feature.id()), feature.id()))
            continue
        value = _number(feature[names[1]])
        if value is None:
            key = (1, 0.0)
        else:
            key = (0, value if order == ORDER_REVIEW_RANK else -value)
        keys.append(((image, key, chunk, feature.id()), feature.id()))
    return [fid for _, fid in sorted(keys)]


def label_counts(layer: QgsVectorLayer, labelled: Optional[Dict[int, int]] = None) -> Dict[Optional[int], int]:
    """How many chunks carry each label: {1: icy, 0: not icy, -1: unclear, None: not labelled}; ``labelled``, where given, is
    filled with {feature id: label} of the labelled ones."""
    counts = {ICY: 0, NOT_ICY: 0, UNCLEAR: 0, None: 0}
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry).setSubsetOfAttributes([LABEL_FIELD], layer.fields())
    for feature in layer.getFeatures(request):
        label = label_value(feature[LABEL_FIELD])
        counts[label] += 1
        if labelled is not None and label is not None:
            labelled[feature.id()] = label
    return counts


def image_ids(layer: QgsVectorLayer) -> List[str]:
    """The distinct image_id values of the layer, in first-seen order."""
    if layer.fields().lookupField("image_id") < 0:
        return []
    index = layer.fields().lookupField("image_id")
    return [str(v) for v in layer.uniqueValues(index) if v is not None and v != NULL]


def _stem(path: str) -> str:
    name = os.path.basename(source_path(path))
    return os.path.splitext(name)[0]


def matching_rasters(layer: QgsVectorLayer, project: QgsProject) -> List[QgsRasterLayer]:
    """The project's raster layers that are the layer's images: named like an image_id, or read from
    a file whose name is the image_id."""
    wanted = set(image_ids(layer))
    found = []
    for candidate in project.mapLayers().values():
        if isinstance(candidate, QgsRasterLayer) and (candidate.name() in wanted or _stem(candidate.source()) in wanted):
            found.append(candidate)
    return sorted(found, key=lambda r: r.name())


def rasters_of_image(image_id: str, rasters: List[QgsRasterLayer]) -> List[QgsRasterLayer]:
    return [r for r in rasters if image_id in (r.name(), _stem(r.source()))]


def show_only_its_image(layer: QgsVectorLayer, image_id: str, project: QgsProject,
                        rasters: Optional[List[QgsRasterLayer]] = None) -> Optional[QgsRasterLayer]:
    """On a layer of several images with their rasters loaded (``rasters``: matching_rasters, where the caller keeps them),
    the raster of ``image_id`` shown and the others of the layer's images hidden (the map had shown whichever lay on top:
    a chunk of May labelled on April's pixels); where its own is not loaded, the others hidden all the same, so that none
    passes for it. The raster shown, or None where it is not loaded or is the only one."""
    rasters = matching_rasters(layer, project) if rasters is None else rasters
    own = rasters_of_image(image_id, rasters)
    if len(own) == len(rasters):
        return None
    root = project.layerTreeRoot()
    for raster in rasters:
        node = root.findLayer(raster.id())
        if node is not None:
            node.setItemVisibilityChecked(raster in own)
    return own[0] if own else None


def scored_with(layer: QgsVectorLayer, project: QgsProject) -> List[Tuple[str, str]]:
    """The (model_name, model_version) pairs that scored the layer's chunks, as their own fields say (chunk layers since
    2026-12-07), else as the summary table in the layer's own file says (a Detect output's, a survey's), else as the loaded
    summary layers of its images say: another project layer's summary (a Detect of the same image with the bundled model)
    had named the model for a survey's chunks."""
    own_fields = _models_named(layer)
    if own_fields and not _rows_naming_no_model(layer):
        return own_fields
    # rows that name no model (a survey of an earlier version, resumed with another model): the summaries say theirs
    wanted = set(image_ids(layer))
    own = source_path(layer.source())
    beside = QgsVectorLayer(f"{own}|layername=summary", "summary", "ogr") if own.lower().endswith(".gpkg") and os.path.isfile(own) else None
    # summaries only: other chunk layers name their own models, not this one's
    loaded = [candidate for candidate in project.mapLayers().values()
              if candidate is not layer and isinstance(candidate, QgsVectorLayer) and candidate.fields().lookupField("chunk_id") < 0]
    for candidates in ([beside] if beside is not None and beside.isValid() else [], loaded):
        named = []
        for candidate in candidates:
            for pair in _models_named(candidate, wanted):
                if pair not in named:
                    named.append(pair)
        if named:
            return own_fields + [pair for pair in named if pair not in own_fields]
    return own_fields


def _rows_naming_no_model(layer: QgsVectorLayer) -> bool:
    if layer.fields().lookupField("model_name") < 0:
        return True
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry).setFilterExpression('"model_name" IS NULL').setLimit(1)
    request.setSubsetOfAttributes(["model_name"], layer.fields())
    return any(True for _ in layer.getFeatures(request))


def _models_named(layer: QgsVectorLayer, image_ids_wanted: Optional[set] = None) -> List[Tuple[str, str]]:
    """The (model_name, model_version) pairs the layer's fields hold (of the wanted images' rows), with the names a
    shapefile cuts to 10 characters ('model_vers')."""
    fields = layer.fields()
    name, version = (next((n for n in names if fields.lookupField(n) >= 0), None) for names in (("model_name",), ("model_version", "model_vers")))
    if name is None or version is None or (image_ids_wanted is not None and fields.lookupField("image_id") < 0):
        return []
    asked = _models_asked_of_provider(layer, name, version) if image_ids_wanted is None else None
    if asked is not None:
        return asked
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry).setSubsetOfAttributes([name, version] + ["image_id"] * (image_ids_wanted is not None), fields)
    named = []
    for feature in layer.getFeatures(request):
        pair = (str(feature[name]), str(feature[version]))
        if feature[name] not in (None, NULL) and pair not in named and (image_ids_wanted is None or str(feature["image_id"]) in image_ids_wanted):
            named.append(pair)
    return named


# Pairs of a name and a version checked one by one at most; beyond, the rows are read.
MAX_MODEL_PAIRS_ASKED = 16


def _models_asked_of_provider(layer: QgsVectorLayer, name: str, version: str) -> Optional[List[Tuple[str, str]]]:
    """The (name, version) pairs the rows hold, each pair of the few names and versions asked of the provider (None where
    there are too many): read row by row, a survey's 600,000 chunks took 4-8 s, twice for one press of Retrain."""
    fields = layer.fields()
    names, versions = ([value for value in layer.uniqueValues(fields.lookupField(field)) if value not in (None, NULL)] for field in (name, version))
    if len(names) * len(versions) > MAX_MODEL_PAIRS_ASKED:
        return None
    pairs = []
    for model in sorted(names, key=str):
        for made in sorted(versions, key=str):
            expression = " AND ".join(QgsExpression.createFieldEqualityExpression(field, value) for field, value in ((name, model), (version, made)))
            request = QgsFeatureRequest().setFilterExpression(expression).setFlags(QgsFeatureRequest.Flag.NoGeometry).setNoAttributes().setLimit(1)
            if any(True for _ in layer.getFeatures(request)):
                pairs.append((str(model), str(made)))
    return pairs


@functools.lru_cache(maxsize=None)
def _engine():
    """The engine's modules the dock uses (model/, as the plugin's subpackage or top-level in tests), found once:
    label_value asks for them for every chunk of a layer."""
    try:
        from ..model import labels, modelfile
    except ImportError:  # plugin imported as a top-level package
        from model import labels, modelfile
    return types.SimpleNamespace(labels=labels, modelfile=modelfile)


def model_path_of(layer: QgsVectorLayer, project: QgsProject) -> str:
    """The model file the layer was made with, where it can be known: the one name and version its summary gives
    (scored_with), matched against the bundled default model and the model files beside the layer's file. Empty when
    unknown, or when its images were scored with several models."""
    named = scored_with(layer, project)
    if len(named) != 1:
        return ""
    made_with = named[0]
    modelfile = _engine().modelfile
    folder = os.path.dirname(source_path(layer.source()))
    candidates = [modelfile.default_model_path()]
    if folder and os.path.isdir(folder):
        candidates += sorted(glob.glob(os.path.join(folder, "*" + modelfile.EXTENSION)))
    for path in candidates:
        try:
            metadata = modelfile.read_metadata(path)
        except Exception:  # noqa: BLE001 - an unreadable file is just not the one
            continue
        if (str(metadata.get("name")), str(metadata.get("version"))) == made_with:
            return path
    return ""


def retrain_parameters(layer: QgsVectorLayer, project: QgsProject) -> Dict:
    """What "Retrain with these labels" gives hiriseice:train: the chunk layer as LABELS, its
    loaded rasters as RASTERS, the model it was made with as BASE_MODEL when known, and, for a
    layer in a file of its own, the new model and its report beside that file (a temporary model was
    gone once QGIS closed, before the README's next step, detecting with it). Beside a temporary
    layer (Detect's default output) they would be as temporary, so the user chooses (TEMPORARY_LAYER)."""
    parameters = {
        "LABELS": [layer.id()],
        "LABEL_FIELD": LABEL_FIELD,
        "RASTERS": [r.id() for r in matching_rasters(layer, project)],
    }
    base = model_path_of(layer, project)
    if base:
        parameters["BASE_MODEL"] = base
    source = source_path(layer.source())
    if os.path.isfile(source) and not is_temporary(layer):
        stem = os.path.join(os.path.dirname(source), os.path.splitext(os.path.basename(source))[0] + "_retrained")
        taken = lambda candidate: any(os.path.exists(candidate + extension) for extension in (_engine().modelfile.EXTENSION, ".html"))  # noqa: E731
        stem = next(f"{stem}_{n}" if n else stem for n in range(1000) if not taken(f"{stem}_{n}" if n else stem))
        parameters.update(OUTPUT_MODEL=stem + _engine().modelfile.EXTENSION, REPORT=stem + ".html")
    return parameters


NO_BASE_MODEL = ("The model that scored these chunks is not known (load the Detect summary layer, which names it): set BASE_MODEL "
                 "in the dialog to continue it, or the network trains from random weights on your labels alone.")


def base_model_advice(layer: QgsVectorLayer, project: QgsProject) -> str:
    """What the dock says where retrain_parameters found no BASE_MODEL: whether the model is unknown, several, or known by
    name without its file."""
    named = scored_with(layer, project)
    if not named:
        return NO_BASE_MODEL
    names = ", ".join(f"{name} {version}" for name, version in named)
    if len(named) > 1:
        return (f"These chunks were scored with several models ({names}): set BASE_MODEL in the dialog to the one to continue, "
                "or the network trains from random weights on your labels alone.")
    return (f"These chunks were scored with {names}, whose file is neither beside the layer nor the bundled default model: set "
            "BASE_MODEL in the dialog to that file to continue it, or the network trains from random weights on your labels alone.")
TEMPORARY_LAYER = ("This chunk layer is temporary, and so would a model written beside it be: choose where the model goes "
                   "(Model file) in the dialog, and save the layer to a file to keep its labels.")


def open_train_dialog(parameters: Dict) -> None:
    """Processing's own dialog for hiriseice:train, prefilled (the user starts it)."""
    import processing

    processing.execAlgorithmDialog(TRAIN_ALGORITHM, parameters)


# --- the dock -------------------------------------------------------------------------------------


class _KeyFilter(QObject):
    """Routes the review keys (no Ctrl, Alt or Meta) to the dock from whichever of its widgets has the
    focus; ShortcutOverride is accepted so that QGIS's own one-key shortcuts do not take them."""

    def __init__(self, dock: "ReviewDock"):
        super().__init__(dock)
        self.dock = dock

    def eventFilter(self, watched, event):  # noqa: N802
        kind = event.type()
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride):
            return False
        # QGIS's Edit > Undo undoes the active layer's last edit, which need not be the reviewed one (a raster, or a
        # summary being edited, stays active while the dock keeps its chunk layer): the labels' own undo comes first here
        step = next((how for sequence, how in ((QKeySequence.StandardKey.Undo, "undo"), (QKeySequence.StandardKey.Redo, "redo")) if event.matches(sequence)), None)
        if step is not None:
            if kind == QEvent.Type.KeyPress:
                self.dock.undo_step(step)
            event.accept()
            return True
        blocking = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier | Qt.KeyboardModifier.MetaModifier
        if event.modifiers() & blocking or not self.dock.handles(event.key()):
            return False
        if kind == QEvent.Type.ShortcutOverride:
            event.accept()
            return True
        self.dock.key(event.key())
        return True


class ReviewDock(QgsDockWidget):
    def __init__(self, iface, parent=None, open_dialog: Callable[[Dict], None] = open_train_dialog):
        super().__init__(TITLE, parent)
        self.setObjectName("HiriseIceReviewDock")
        self.iface = iface
        self.open_dialog = open_dialog
        self.layer: Optional[QgsVectorLayer] = None
        self.order_ids: List[int] = []
        self.repeated: Set[Tuple] = set()  # where the chunks lie (_same_chunk) that have more than one row
        self.position = 0
        self.outline = None
        self.saved_selection_colour = None
        # Marking or undoing a thousand chunks changes a thousand values: one recount, one reload for them all.
        self._refresh_soon, self._reload_soon = self._deferred(self._recount), self._deferred(self._reload)
        # The label counts, read whole only when the layer's chunks change: on a survey's 600,000 chunks a count takes 3-6 s,
        # which each step and then each label key had waited for. A label's change moves one chunk between two counts
        # (_count_changes), from the label it has in _labels ({feature id: label} of the labelled chunks, kept with the counts).
        self.counts: Optional[Dict[Optional[int], int]] = None
        self._labels: Dict[int, int] = {}
        self._label_changes: List[Tuple[int, object]] = []
        self._gone_from_the_file = False  # the chunk shown was found gone from the file (current_feature)
        # The rasters of the layer's images (matching_rasters: a whole-layer DISTINCT), found again only when layers come or go,
        # not for every chunk shown (0.2 s a step on a survey of 600,000 chunks).
        self._rasters: Optional[List[QgsRasterLayer]] = None
        QgsProject.instance().layersAdded.connect(self._forget_rasters)
        QgsProject.instance().layersRemoved.connect(self._forget_rasters)
        self._build()
        # Whether it can be seen: closed or behind another dock's tab, it follows no layer (visibilityChanged).
        self.shown = True
        self.visibilityChanged.connect(self._visibility_changed)
        if hasattr(self.iface, "currentLayerChanged"):
            self.iface.currentLayerChanged.connect(self._active_layer_changed)
        self.set_layer(self.iface.activeLayer())

    def _deferred(self, slot) -> QTimer:
        """A timer that calls ``slot`` once when the events queued now are handled, however often it is started."""
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(0)
        timer.timeout.connect(lambda: slot())
        return timer

    def release(self):
        """Lets go of the layer, the map and QGIS's signals (the plugin's unload)."""
        self._restore_canvas()
        if self.outline is not None:
            self._canvas().scene().removeItem(self.outline)
            self.outline = None
        self.set_layer(None)
        for signal, slot in ((QgsProject.instance().layersAdded, self._forget_rasters), (QgsProject.instance().layersRemoved, self._forget_rasters)) + (
                ((self.iface.currentLayerChanged, self._active_layer_changed),) if hasattr(self.iface, "currentLayerChanged") else ()):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass

    def _forget_rasters(self, *args):
        self._rasters = None

    def _layer_rasters(self) -> List[QgsRasterLayer]:
        if self._rasters is None:
            self._rasters = matching_rasters(self.layer, QgsProject.instance())
        return self._rasters

    # --- widgets ---

    def _build(self):
        panel = QWidget(self)
        panel.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.layer_label = QLabel(panel)
        self.layer_label.setWordWrap(True)
        self.order_box = QComboBox(panel)
        for key, text in ORDERS:
            self.order_box.addItem(text, key)
        self.order_box.currentIndexChanged.connect(self._order_changed)
        self.position_label = QLabel(panel)
        self.image_label, self.chunk_label, self.probability_label, self.class_label, self.current_label = (QLabel(panel) for _ in range(5))
        for label in (self.chunk_label, self.probability_label):
            font = label.font()
            font.setPointSizeF(font.pointSizeF() * 1.4)
            font.setBold(True)
            label.setFont(font)
        form = QFormLayout()
        form.addRow("Order", self.order_box)
        form.addRow("Image", self.image_label)
        form.addRow("Chunk", self.chunk_label)
        form.addRow("Probability", self.probability_label)
        form.addRow("Class", self.class_label)
        form.addRow("Label", self.current_label)
        self.buttons = {}
        labels = QGridLayout()
        for column, (value, text) in enumerate(((ICY, "Icy  [1]"), (NOT_ICY, "Not icy  [0]"), (UNCLEAR, "Unclear  [U]"))):
            button = QPushButton(text, panel)
            button.setToolTip(f"Write {value} into 'label' of this chunk and go to the next")
            button.clicked.connect(lambda checked=False, v=value: self.label_current(v))
            labels.addWidget(button, 0, column)
            self.buttons[value] = button
        moves = QHBoxLayout()
        self.previous_button = QPushButton("◀ Previous  [P]", panel)
        self.next_button = QPushButton("Next  [N] ▶", panel)
        self.previous_button.clicked.connect(self.previous)
        self.next_button.clicked.connect(self.next)
        moves.addWidget(self.previous_button)
        moves.addWidget(self.position_label, 1, Qt.AlignmentFlag.AlignCenter)
        moves.addWidget(self.next_button)
        self.counts_label = QLabel(panel)
        self.counts_label.setWordWrap(True)
        self.message_label = QLabel(panel)
        self.message_label.setWordWrap(True)
        self.retrain_button = QPushButton("Retrain with these labels…", panel)
        self.retrain_button.setToolTip("Open Train ice-patch model with this layer as labels, its image and the model it was made with")
        self.retrain_button.clicked.connect(self.retrain)
        help_label = QLabel(f"Keys (click here first, or {REVIEW_SHORTCUT}): 1 icy, 0 not icy, U unclear, N/→ next, P/← previous. Ctrl+Z undoes a label.", panel)
        help_label.setWordWrap(True)
        help_label.setStyleSheet("color: palette(dark);")  # palette(mid) read 1.7:1, like a disabled button
        layout = QVBoxLayout(panel)
        layout.addWidget(self.layer_label)
        layout.addLayout(form)
        layout.addLayout(labels)
        layout.addLayout(moves)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.message_label)
        layout.addWidget(self.retrain_button)
        layout.addWidget(help_label)
        layout.addStretch(1)
        self.setWidget(panel)
        # A click leaves the focus where it was, so the keys go on working after it; Tab still reaches every button (Retrain
        # had no key, and without a mouse could not be reached at all).
        for button in (*self.buttons.values(), self.previous_button, self.next_button, self.retrain_button):
            button.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self.key_filter = _KeyFilter(self)
        for widget in [self, panel] + panel.findChildren(QWidget):
            widget.installEventFilter(self.key_filter)

    # --- the layer ---

    def _active_layer_changed(self, layer):
        # Another chunk layer becomes the one reviewed; a raster or other layer leaves it as it is. A closed
        # dock follows nothing: it had replaced the geologist's selection with one chunk (which Mark icy then
        # labelled) and moved the map; reopened, it takes up the active layer (adopt_active_layer).
        if is_chunk_layer(layer) and layer is not self.layer and self.shown:
            self.set_layer(layer)

    def _visibility_changed(self, visible: bool):
        was, self.shown = self.shown, visible
        if visible and not was:
            self.adopt_active_layer()

    def adopt_active_layer(self):
        """On opening: the active chunk layer if it is another, else the chunk where the review stood, shown again."""
        active = self.iface.activeLayer()
        if self.layer is None or (is_chunk_layer(active) and active is not self.layer):
            self.set_layer(active)
        else:
            self.show_current()

    def set_layer(self, layer):
        self._rasters = None
        if self.layer is not None:
            self._disconnect(self.layer)
        self.layer = layer if is_chunk_layer(layer) else None
        if self.layer is None:
            self.order_ids = []
            if self.outline is not None:
                self.outline.reset(POLYGON)
            self.layer_label.setText("Make the chunk layer of <i>Detect ice patches</i> the active layer (it needs the fields chunk_id, probability and label).")
            self._refresh()
            return
        self.layer.attributeValueChanged.connect(self._attribute_changed)
        self.layer.afterCommitChanges.connect(self._recount_later)  # "(unsaved edits)" had stayed after a save; saved new chunks take new ids
        self.layer.dataProvider().dataChanged.connect(self._reload_later)  # the file read again (F5): a survey still running wrote more chunks
        self.layer.subsetStringChanged.connect(self._reload_later)  # a filter hides chunks the review would step to
        self.layer.afterRollBack.connect(self._reload_later)
        self.layer.featuresDeleted.connect(self._reload_later)
        self.layer.featureAdded.connect(self._reload_later)  # a deletion undone
        self.layer.willBeDeleted.connect(self._layer_gone)
        has_rank = self.layer.fields().lookupField("review_rank") >= 0
        item = self.order_box.model().item(0)
        item.setEnabled(has_rank)
        if not has_rank and self.order() == ORDER_REVIEW_RANK:
            self.order_box.setCurrentIndex(1)  # reorders through _order_changed
        self._reload(start_at_first_unlabelled=True)

    def _disconnect(self, layer):
        provider = layer.dataProvider()
        for signal, slot in ((layer.attributeValueChanged, self._attribute_changed), (layer.afterCommitChanges, self._recount_later),
                             *(((provider.dataChanged, self._reload_later),) if provider is not None else ()),
                             (layer.subsetStringChanged, self._reload_later), (layer.afterRollBack, self._reload_later),
                             (layer.featuresDeleted, self._reload_later), (layer.featureAdded, self._reload_later),
                             (layer.willBeDeleted, self._layer_gone)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass

    def _layer_gone(self):
        self.layer = None
        self.set_layer(None)

    def _reload(self, *args, start_at_first_unlabelled: bool = False):
        if self.layer is None:
            return
        current = self.current_id()
        self.repeated = set()
        self.order_ids = review_order(self.layer, self.order(), self.repeated)
        self.counts = self._count_labels()  # read with the labelled chunks, which also give the first unlabelled one
        if start_at_first_unlabelled:
            self.position = self._first_unlabelled()
        elif current in self.order_ids:
            self.position = self.order_ids.index(current)
        else:
            self.position = min(self.position, max(len(self.order_ids) - 1, 0))
        self.layer_label.setText(f"Reviewing <b>{self.layer.name()}</b>")
        self.show_current()
        if self._gone_from_the_file:  # said where the review goes on, not only on the key that found it
            self._gone_from_the_file = False
            self.message_label.setText(GONE_FROM_THE_FILE)

    def _reload_later(self, *args):
        self._reload_soon.start()

    def _refresh_later(self, *args):
        self._refresh_soon.start()

    def _recount_later(self, *args):
        self.counts = None
        self._refresh_soon.start()

    def _first_unlabelled(self) -> int:
        return next((i for i, fid in enumerate(self.order_ids) if fid not in self._labels), 0)

    def _attribute_changed(self, fid, index, value):
        if self.layer is not None and index == self.layer.fields().lookupField(LABEL_FIELD):
            self._label_changes.append((fid, value))
            self._refresh_soon.start()  # an undo or an edit elsewhere shows here too

    def order(self) -> str:
        return self.order_box.currentData()

    def set_order(self, order: str):
        self.order_box.setCurrentIndex([key for key, _ in ORDERS].index(order))

    def _order_changed(self, *args):
        if self.layer is not None:  # the new order from its first chunk still to label, as a layer's review starts
            self._reload(start_at_first_unlabelled=True)

    # --- moving and labelling ---

    def current_id(self) -> Optional[int]:
        return self.order_ids[self.position] if self.layer is not None and 0 <= self.position < len(self.order_ids) else None

    def current_feature(self):
        fid = self.current_id()
        if fid is None:
            return None
        feature = self.layer.getFeature(fid)
        if not feature.isValid():  # its row is gone from the file (a survey rescored the image): the order is read again
            self._gone_from_the_file = True
            self._reload_soon.start()
            return None
        return feature

    def go_to(self, position: int):
        if self.layer is None or not self.order_ids:
            return
        self.position = max(0, min(position, len(self.order_ids) - 1))
        self.show_current()

    def next(self):
        if self.layer is not None and self.position >= len(self.order_ids) - 1:
            self.message_label.setText("That was the last chunk. Chunks written to the file since the layer was read (a survey still running) "
                                       "come after View › Refresh (F5).")
            return
        self.go_to(self.position + 1)

    def previous(self):
        self.go_to(self.position - 1)

    def label_current(self, value: int):
        if self.current_feature() is None:  # nothing to label, or a row gone from the file: nothing labelled that could not be saved
            if self.current_id() is not None:
                self.message_label.setText(GONE_FROM_THE_FILE)
            return
        fid = self.current_id()
        self.layer.selectByIds([fid])
        try:
            mark_selected(self.layer, value)
        except LabellingError as exc:
            self.message_label.setText(str(exc))
            return
        self.message_label.setText("")
        if self.position < len(self.order_ids) - 1:
            self.go_to(self.position + 1)
        else:
            self._refresh()
            self.message_label.setText(f"Labelled the last chunk. {how_to_keep_labels(self.layer)}")

    def handles(self, key) -> bool:
        key = _code(key)
        return key in LABEL_KEYS or key in NEXT_KEYS or key in PREVIOUS_KEYS

    def undo_step(self, how: str):
        """Undo ("undo") or redo ("redo") the reviewed layer's last edit, as its undo stack holds them (each label one)."""
        if self.layer is not None and self.layer.isEditable():
            getattr(self.layer.undoStack(), how)()

    def key(self, key):
        key = _code(key)
        if key in LABEL_KEYS:
            self.label_current(LABEL_KEYS[key])
        elif key in NEXT_KEYS:
            self.next()
        elif key in PREVIOUS_KEYS:
            self.previous()

    def show_current(self):
        feature = self.current_feature()
        note = ""
        if feature is not None and self.shown:  # a closed (or tabbed-away) dock leaves the selection and the map alone
            self.layer.selectByIds([feature.id()])
            note = self._zoom_to(feature)
        self.message_label.setText(note or (GONE_FROM_THE_FILE if feature is None and self.current_id() is not None else ""))
        self._refresh()

    def _canvas(self):
        return self.iface.mapCanvas() if hasattr(self.iface, "mapCanvas") else None

    def showEvent(self, event):  # noqa: N802
        canvas = self._canvas()
        if canvas is not None and self.saved_selection_colour is None:
            self.saved_selection_colour = QColor(canvas.selectionColor())
            canvas.setSelectionColor(SELECTION_COLOUR)
        if self.outline is not None:
            self.outline.show()
        super().showEvent(event)

    def hideEvent(self, event):  # noqa: N802
        self._restore_canvas()
        if self.outline is not None:
            self.outline.hide()
        super().hideEvent(event)

    def _restore_canvas(self):
        canvas = self._canvas()
        if canvas is not None and self.saved_selection_colour is not None:
            canvas.setSelectionColor(self.saved_selection_colour)
            canvas.refresh()
        self.saved_selection_colour = None

    def _zoom_to(self, feature) -> str:
        """The map at the chunk, over its own image; what the dock should say of that image (its raster not loaded), or ''."""
        canvas = self._canvas()
        if canvas is None or not feature.hasGeometry():
            return ""
        if self.outline is None:
            self.outline = QgsRubberBand(canvas, POLYGON)
            self.outline.setFillColor(QColor(0, 0, 0, 0))
            self.outline.setStrokeColor(OUTLINE)
            self.outline.setWidth(3)
        note = ""
        if self.layer.fields().lookupField("image_id") >= 0 and feature["image_id"] not in (None, NULL):
            image, rasters = str(feature["image_id"]), self._layer_rasters()
            show_only_its_image(self.layer, image, QgsProject.instance(), rasters)
            if rasters and not rasters_of_image(image, rasters):
                note = f"The raster of {image} is not loaded (the other images' are hidden): load it to see this chunk's own pixels."
        self.outline.setToGeometry(feature.geometry(), self.layer)
        self.outline.setVisible(self.isVisible())
        rect = feature.geometry().boundingBox()
        destination = canvas.mapSettings().destinationCrs()
        if destination.isValid() and self.layer.crs().isValid() and destination != self.layer.crs():
            rect = QgsCoordinateTransform(self.layer.crs(), destination, QgsProject.instance()).transformBoundingBox(rect)
        rect.grow(max(rect.width(), rect.height()) * MARGIN)
        canvas.setExtent(rect)
        canvas.refresh()
        return note

    def _recount(self):
        changes, self._label_changes = self._label_changes, []
        if self.counts is not None and len(changes) <= RECOUNT_ABOVE_CHANGES and self.layer is not None:
            self._count_changes(changes)
        else:
            self.counts = None
        self._refresh()

    def _count_labels(self) -> Dict[Optional[int], int]:
        """The layer's label counts, read whole, with the labelled chunks' labels."""
        self._label_changes, self._labels = [], {}
        return label_counts(self.layer, self._labels)

    def _count_changes(self, changes: List[Tuple[int, object]]) -> None:
        """Move each changed chunk from the count of the label it had to that of its new label."""
        for fid, value in changes:
            before, after = self._labels.pop(fid, None), label_value(value)
            self.counts[before] -= 1
            self.counts[after] += 1
            if after is not None:
                self._labels[fid] = after

    def _refresh(self):
        feature = self.current_feature()
        enabled = feature is not None
        for widget in (*self.buttons.values(), self.previous_button, self.next_button, self.retrain_button):
            widget.setEnabled(enabled)
        if feature is None:
            for label in (self.image_label, self.chunk_label, self.probability_label, self.class_label, self.current_label, self.position_label, self.counts_label):
                label.setText("–")
            return
        probability = _number(feature["probability"])
        image = feature["image_id"] if self.layer.fields().lookupField("image_id") >= 0 else None
        self.image_label.setText("–" if image in (None, NULL) else str(image))
        self.chunk_label.setText(str(feature["chunk_id"]))
        # in the locale's numbers, as QGIS writes the same value in the attribute table and the form (0,060 in German)
        self.probability_label.setText("–" if probability is None else QLocale().toString(float(probability), "f", 3))
        chunk_class = feature["class"] if self.layer.fields().lookupField("class") >= 0 else None
        self.class_label.setText("–" if chunk_class in (None, NULL) else str(chunk_class))
        value = label_value(feature[LABEL_FIELD])
        self.current_label.setText(("not labelled" if value is None else f"{NAMES[value]} ({value})") + self._other_rows_note(feature, value))
        self.position_label.setText(f"{self.position + 1} of {len(self.order_ids)}")
        self.previous_button.setEnabled(self.position > 0)
        self.next_button.setEnabled(self.position < len(self.order_ids) - 1)
        if self.counts is None:
            self.counts = self._count_labels()
        counts = self.counts
        self.counts_label.setText(
            f"Labelled: <b>{counts[ICY]}</b> icy, <b>{counts[NOT_ICY]}</b> not icy, <b>{counts[UNCLEAR]}</b> unclear; {counts[None]} not labelled"
            + (" <i>(unsaved edits)</i>" if self.layer.isModified() else "")
        )
        self.retrain_button.setEnabled(counts[ICY] > 0 and counts[NOT_ICY] > 0)

    def _other_rows_note(self, feature, value: Optional[int]) -> str:
        """Where this chunk has other rows in the layer (two geologists' layers merged), what they say: training leaves a chunk
        out whose rows disagree, and the counts above count rows."""
        image = str(feature["image_id"]) if self.layer.fields().lookupField("image_id") >= 0 and feature["image_id"] not in (None, NULL) else ""
        window_fields = _window_fields(self.layer)
        where = _same_chunk(feature, image, window_fields)
        if where is None or where not in self.repeated:
            return ""
        expression = " AND ".join(QgsExpression.createFieldEqualityExpression(name, feature[name]) for name in window_fields)
        if image:
            expression += " AND " + QgsExpression.createFieldEqualityExpression("image_id", image)
        request = QgsFeatureRequest().setFilterExpression(expression).setFlags(QgsFeatureRequest.Flag.NoGeometry)
        others = [label_value(other[LABEL_FIELD]) for other in self.layer.getFeatures(request.setSubsetOfAttributes([LABEL_FIELD, "image_id", *window_fields], self.layer.fields()))
                  if other.id() != feature.id()]
        said = ", ".join("not labelled" if other is None else NAMES[other] for other in others)
        disagree = len({label for label in [value, *others] if label is not None}) > 1
        return (f"; {len(others)} other row(s) of this chunk: {said}" + (" (they disagree: training leaves it out until they agree)" if disagree else ""))

    # --- retraining ---
    # --- retraining ---

    def retrain(self):
        if self.layer is None:
            return
        parameters = retrain_parameters(self.layer, QgsProject.instance())
        said = ([] if "BASE_MODEL" in parameters else [base_model_advice(self.layer, QgsProject.instance())]) + ([TEMPORARY_LAYER] if is_temporary(self.layer) else [])
        self.message_label.setText(" ".join(said))
        self.open_dialog(parameters)
