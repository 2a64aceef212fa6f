"""hiriseice:train - train (or continue training) a model from labelled layers, in the worker."""

import collections
import dataclasses
import getpass
import json
import math
import os
import shutil
import stat
import tempfile
import uuid
from typing import Dict, Optional

from qgis.core import (
    NULL,
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCsException,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRectangle,
    QgsUnitTypes,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .algorithm import HiriseIceAlgorithm, LayerListParameter, gdal_without_pam
from .common import (check_band, features_from_dicts, georeferenced_by_sidecar, layer_crs, make_fields, processing_temp_folder, raster_path_for_worker, require_crs,
                     write_sink)
from .destinations import check_room, file_destination, replacing_outputs
from .detect_algorithm import HTML_FILTER, MODEL_FILTER
from .engine import errors, files, gdal_exceptions, georeference, imagechecks, labels, modelfile, network, raster, schema, training

AUGMENT_MODES = training.AUGMENT_MODES
DEFAULTS = training.TrainOptions()  # the engine's: the toolbox, the command line and job files train alike
from .worker import WorkerSaid, partial_path, run_worker

LABEL_MODES = ("chunks", "outlines")
# Free room asked of each output's disk before training: a model file (about 10 MB, 60 with its replay sample) and its report
TRAINING_OUTPUT_BYTES = 100 * 1024 * 1024
# NETWORK's choices, in network.TRUNKS's order.
NETWORK_LABELS = ("Small Xception of the paper, from random weights", "EfficientNet-Lite0, from ImageNet weights")


def _says_a_label(value, mode: str) -> bool:
    """Whether a label value is filled as the engine reads it: for chunks, icy or not icy ('', 'unclear' or -1 leave a chunk
    out as NULL does; a value it cannot read counts, for the worker to name); for outlines, anything but empty (ice as drawn)."""
    if mode != "chunks":
        return value is not None and str(value).strip().lower() not in labels.EMPTY_WORDS
    try:
        return labels.parse_label(value) is not None
    except errors.EngineError:
        return True


def _marks_unclear(value, mode: str) -> bool:
    """Whether a chunk label value marks its chunk unclear (-1, 'unclear', '?'), which training leaves out, rather than being empty."""
    return mode == "chunks" and not _says_a_label(value, mode) and labels.says_unclear(value)


def json_label(value):
    """A label attribute as JSON: int / float / str / bool as they are, NULL as None, anything else as text."""
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# Below this many label features, training from random weights learns next to nothing (the default model saw tens of
# thousands of examples); a geologist's round of a few hundred labels is meant to continue a model.
FEW_LABELS_FROM_SCRATCH = 2000


def _kept_for_a_bug_report(job_path: str) -> str:
    """Where a failed run's job is kept, to run again or attach to a bug report: qgis_process deletes its temporary folder,
    with the job the log had named, as it exits. A sentence to add to the error, "" where it could not be kept."""
    try:
        folder = os.path.join(tempfile.gettempdir(), f"hiriseice-failed-jobs-{getpass.getuser()}")
        kept = os.path.join(folder, os.path.basename(job_path))
        os.makedirs(folder, mode=0o700, exist_ok=True)
        held = os.lstat(folder)
        if not stat.S_ISDIR(held.st_mode) or (hasattr(os, "getuid") and held.st_uid != os.getuid()):
            return ""  # another user's folder (or a link) under this name on a shared machine: the job names this user's files
        shutil.copyfile(job_path, kept)
    except (OSError, KeyError):  # getpass: no user name for this uid (KeyError before Python 3.13, OSError since)
        return ""
    return f"\nThe training job is kept as {kept}: attach it to a bug report (it names your files), or run it again with the worker command above, given that file."


class TrainAlgorithm(HiriseIceAlgorithm):
    NAME = "train"
    DISPLAY_NAME = "Train ice-patch model"
    GROUP = "Training"
    GROUP_ID = "training"

    RASTERS = "RASTERS"
    LABELS = "LABELS"
    LABEL_FIELD = "LABEL_FIELD"
    LABEL_MODE = "LABEL_MODE"
    EXCLUDE = "EXCLUDE"
    BASE_MODEL = "BASE_MODEL"
    CHUNK_SIZE = "CHUNK_SIZE"
    BAND = "BAND"
    INPUT_SIZE = "INPUT_SIZE"
    EPOCHS = "EPOCHS"
    BATCH_SIZE = "BATCH_SIZE"
    VALIDATION_FRACTION = "VALIDATION_FRACTION"
    LEARNING_RATE = "LEARNING_RATE"
    PATIENCE = "PATIENCE"
    AUGMENT = "AUGMENT"
    SEED = "SEED"
    WIDTHS = "WIDTHS"
    NETWORK = "NETWORK"
    UNLABELLED = "UNLABELLED"
    ANCHOR = "ANCHOR"
    OUTPUT_MODEL = "OUTPUT_MODEL"
    HISTORY = "HISTORY"
    REPORT = "REPORT"
    OUTPUT_FIELDS = {HISTORY: schema.HISTORY_FIELDS}

    def shortHelpString(self):
        return self.tr(
            "<p>Trains the ice-patch network (the small Xception of Gergács &amp; Kereszturi) on your labels and writes a "
            "shareable model file (<i>*.hiriseice</i>) for <i>Detect ice patches</i>.</p>"
            "<p><b>Rasters</b>: the HiRISE images the labels belong to. <b>Label layers</b>: polygons in any CRS; every feature is "
            "reprojected into each raster's CRS and used where it lies over that raster. <b>Label mode</b>: "
            "<i>chunk polygons</i> - each polygon is a chunk with a label, e.g. the output of <i>Detect ice patches</i> "
            "after filling its <i>label</i> field with the labelling tools; <i>ice-patch outlines</i> - polygons drawn around ice "
            "patches: grid chunks sharing area with an outline are icy, the others not icy (except those sharing area with an <i>exclusion</i> "
            "polygon, or with an outline whose label is -1 or 'unclear'; an outline with an empty label is ice, one labelled 0 none), "
            "and the outlines also teach the network where in each chunk the ice lies, which a round learns more from. "
            "<b>Label field</b>: 1 / 0, icy / not icy or yes / no; NULL, -1 or 'unclear' leave a chunk out (as the paper left out "
            "its unclear chunks). A chunk polygon given twice counts once; one whose labels disagree (icy and not icy, or either and "
            "unclear: two geologists' label layers over the same chunks) is left out and named in a warning, and the log counts what "
            "was left out and why. <b>Exclusion polygons</b> (optional): chunk "
            "polygons sharing area with them are left out, and in outline mode every grid chunk touching them.</p>"
            "<p><b>Band</b> (advanced): the band to read, as detect's BAND; 0 reads a single band, or the mean of the colour bands. "
            "<b>Rasters</b> and <b>label layers</b> take several layers; in qgis_process give them as RASTERS=a.tif;b.tif or as "
            "repeated RASTERS=a.tif RASTERS=b.tif.</p>"
            "<p><b>Base model</b> (optional): fine-tune an existing model (its input size and normalisation are kept) at a lower "
            "learning rate with a warm-up, its batch-norm statistics kept, the examples it carries replayed in every epoch (three for "
            "each of your chunks, up to all it carries, aimed half at the base model's own probability) and every weight pulled back toward the base's "
            "after each step; before writing, the base and the new model are scored on the same validation chunks and the log and report say plainly if the "
            "new one is worse. Empty = start from scratch. <b>Chunk size</b>: 0 (default) = the size of the label polygons (e.g. the "
            "CHUNK_SIZE you detected at), else the base model's, else the paper's 1024; the model records it and detect uses it by default. "
            "<b>Input size</b> 256 is the paper's. <b>Learning rate</b>: 0 (default) = 0.001 from scratch, 0.0001 when fine-tuning. "
            "Training uses Adam and binary "
            "cross-entropy; the epoch with the lowest validation loss is kept (<b>patience</b>: epochs without improvement before "
            "stopping); validation chunks are held out by observation when the labels cover several, else in spatial blocks of 3 x 3 chunks "
            "(named in the log and report), and no training chunk shares a pixel with a validation chunk (an overlapping grid's); icy and not-icy chunks are "
            "balanced by class weights; probabilities are calibrated on the validation chunks only when they hold at least 10 chunks of "
            "each class and the fit improves them, otherwise the base model's calibration (or none) is kept. <b>Augmentation</b>: lighting-safe (default) mirrors east-west and "
            "varies brightness and contrast, keeping north up, because ice hides on the poleward side of what shades it; full "
            "adds north-south flips and 90-degree rotations, for labels that do not depend on illumination. <b>Widths</b> (advanced, from scratch only; a base model keeps its own): the network's layer widths. "
            "<b>Network</b> (advanced, from scratch only; a base model keeps its own): the paper's small Xception, from random weights, or "
            "EfficientNet-Lite0, which starts from what it learnt on a million photographs (ImageNet): from the same examples it learnt "
            "our kinds of ice better and called real terrain icy less often (docs/default-model.md in the plugin's folder); its input size "
            "should be a multiple of 32 for the probability raster and overlapping grids. "
            "<b>Unlabelled chunks</b> (advanced, fine-tuning on chunk polygons only): this many chunks of your images that you did not label, per labelled "
            "chunk, are trained toward the base model's own probability, so the new model keeps its answers on the rest of the image; "
            "2 kept the other kinds of ice better and learnt the labelled kind a little less (docs/retraining.md). "
            "<b>Pull back</b> (advanced, fine-tuning only): the share of the way every weight returns toward the base model's after "
            "each step. The default 0.02 keeps what the base knew within about 0.01 AUC; 0 learns your kind of ice most and forgets "
            "the others most (1,200 labels of a new kind: 0.816 with 0.02, 0.846 with 0, the other kinds losing up to 0.013 and "
            "0.055; docs/retraining.md). Lower it only when your own kind of ice is all you survey for.</p>"
            "<p>Outputs: the model file, the per-epoch history as a table (loss and accuracy on the training chunks; loss, accuracy, "
            "precision, recall and ROC AUC on the validation chunks), and an HTML report with learning curves, confusion matrix and reliability diagram.</p>"
            "<p>Training runs in the worker (a separate Python with TensorFlow), never inside QGIS; a GPU is used when the worker "
            "has one. If the worker is missing, install it from HiRISE Ice Patches › Worker settings… › Reinstall… (in a checkout of its "
            "source on Debian or Ubuntu also <i>bash scripts/install</i>).</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(LayerListParameter(self.RASTERS, self.tr("HiRISE rasters"), QgsProcessing.SourceType.TypeRaster))
        self.addParameter(LayerListParameter(self.LABELS, self.tr("Label layers"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterString(self.LABEL_FIELD, self.tr("Label field"), "label"))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.LABEL_MODE, self.tr("The label layers hold"), [self.tr("chunk polygons (e.g. a filled detect output)"), self.tr("ice-patch outlines")], defaultValue=0
            )
        )
        self.addParameter(LayerListParameter(self.EXCLUDE, self.tr("Exclusion polygons (chunks there are left out)"), QgsProcessing.SourceType.TypeVectorPolygon, optional=True))
        self.addParameter(QgsProcessingParameterFile(self.BASE_MODEL, self.tr("Continue training this model"), QgsProcessingParameterFile.Behavior.File, optional=True, fileFilter=MODEL_FILTER))
        self.addParameter(
            QgsProcessingParameterNumber(
                self.CHUNK_SIZE, self.tr("Chunk size (pixels; 0 = the label polygons' size, else the base model's or 1024)"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0
            )
        )
        self._advanced(QgsProcessingParameterNumber(self.BAND, self.tr("Band (0 = automatic; the band you detected on)"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        self._advanced(QgsProcessingParameterNumber(self.INPUT_SIZE, self.tr("Network input size (pixels)"), QgsProcessingParameterNumber.Type.Integer, DEFAULTS.input_size, minValue=32))
        self.addParameter(QgsProcessingParameterNumber(self.EPOCHS, self.tr("Epochs (0 = 30 from scratch, 10 when fine-tuning)"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.BATCH_SIZE, self.tr("Batch size"), QgsProcessingParameterNumber.Type.Integer, DEFAULTS.batch_size, minValue=1))
        self.addParameter(
            QgsProcessingParameterNumber(self.VALIDATION_FRACTION, self.tr("Validation share"), QgsProcessingParameterNumber.Type.Double, DEFAULTS.validation_fraction, minValue=0.05, maxValue=0.5)
        )
        learning_rate = QgsProcessingParameterNumber(
            self.LEARNING_RATE, self.tr("Learning rate (0 = 0.001 from scratch, 0.0001 when fine-tuning)"), QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0.0, maxValue=1.0
        )
        learning_rate.setMetadata({"widget_wrapper": {"decimals": 6}})
        self.addParameter(learning_rate)
        self.addParameter(QgsProcessingParameterNumber(self.PATIENCE, self.tr("Patience (epochs without improvement)"), QgsProcessingParameterNumber.Type.Integer, DEFAULTS.patience, minValue=1))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.AUGMENT,
                self.tr("Augmentation"),
                [
                    self.tr("none"),
                    self.tr("lighting-safe: east-west mirrors, brightness and contrast"),
                    self.tr("full: also north-south flips and 90° rotations (scrambles the poleward-shadow cue)"),
                ],
                defaultValue=AUGMENT_MODES.index(DEFAULTS.augment),
            )
        )
        self.addParameter(QgsProcessingParameterNumber(self.SEED, self.tr("Random seed"), QgsProcessingParameterNumber.Type.Integer, DEFAULTS.seed))
        self._advanced(QgsProcessingParameterString(self.WIDTHS, self.tr("Layer widths (entry, blocks..., exit)"), ",".join(str(width) for width in DEFAULTS.widths)))
        self._advanced(QgsProcessingParameterEnum(self.NETWORK, self.tr("Network, when training from scratch"), [self.tr(label) for label in NETWORK_LABELS], defaultValue=0))
        self._advanced(
            QgsProcessingParameterNumber(
                self.UNLABELLED, self.tr("Unlabelled chunks of the images kept at the base model's answers, per labelled chunk (fine-tuning; 0 = none)"),
                QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0.0, maxValue=10.0,
            )
        )
        anchor = QgsProcessingParameterNumber(
            self.ANCHOR, self.tr("Pull back toward the base model per step (fine-tuning; 0 = none: learns most, forgets most)"),
            QgsProcessingParameterNumber.Type.Double, training.finetune.ANCHOR_PULL, minValue=0.0, maxValue=1.0,
        )
        anchor.setMetadata({"widget_wrapper": {"decimals": 4}})
        self._advanced(anchor)
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT_MODEL, self.tr("Model file"), "HiRISE Ice Patches model (*.hiriseice)"))
        self.addParameter(QgsProcessingParameterFeatureSink(self.HISTORY, self.tr("Training history"), QgsProcessing.SourceType.TypeVector, optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.REPORT, self.tr("Training report"), HTML_FILTER, optional=True, createByDefault=True))

    def _advanced(self, parameter):
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(parameter)

    # --- labels into each raster's CRS --------------------------------------------------------

    def _widths(self, text: str):
        try:
            widths = [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
        except ValueError:
            widths = []
        if len(widths) < 3 or min(widths) < 1:
            raise QgsProcessingException(
                f"WIDTHS '{text}' is not a list of at least three positive whole numbers (entry width, block widths..., exit width); the paper's is 128,256,512,728,1024."
            )
        return widths

    @staticmethod
    def _check_labels_hold_features(label_layers) -> None:
        """Label layers without a single feature stop the run with that, not with a search for the features' CRS."""
        if all(layer.featureCount() == 0 for layer in label_layers):
            names = ", ".join(f"'{layer.name()}'" for layer in label_layers)
            raise QgsProcessingException(
                f"The label layer(s) {names} hold no features. Label chunks first (detect, then Mark icy / Mark not icy on the "
                "HiRISE Ice Patches toolbar, or fill the label field), or draw ice-patch outlines, and give that layer as LABELS."
            )

    def _geometries_over(self, layer, raster_layer, context, feedback, attribute_index=None, image_ids=()):
        """(wkt, raw attribute, which feature it is) of `layer`'s features reprojected into the raster's CRS and over its extent; the
        failures; and the image IDs of those over it that belong to another image. A feature with an image_id (a Detect chunk layer's)
        is read on that image only: HiRISE images a site again, and a chunk labelled icy in spring is not icy in summer."""
        target = raster_layer.crs()
        extent = raster_layer.extent()
        extent_geometry = QgsGeometry.fromRect(extent)
        # stripped both: detect writes a file's ID as it is ('scene ' for "scene .tif"), a typed one may hold spaces around it
        own_ids = {name.strip() for name in image_ids}
        source_crs = layer_crs(layer)
        if source_crs.description().startswith("Undefined "):  # a GeoPackage's srs_id 0 or -1: GDAL's names for none
            source_crs = QgsCoordinateReferenceSystem()
        if source_crs.isValid() and imagechecks.not_mars_warning(layer.name(), source_crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED_GDAL)):
            # QGIS could only print "Cannot create transform" for each feature
            raise QgsProcessingException(
                f"The label layer '{layer.name()}' is in {source_crs.authid() or source_crs.description()}, a CRS of another body "
                f"than Mars, so its features cannot lie over '{raster_layer.name()}'. Set the layer's Mars CRS (Layer Properties > Source, "
                "the CRS its coordinates were drawn in) and run again."
            )
        if not source_crs.isValid():
            source_crs = target
            feedback.pushWarning(
                f"'{layer.name()}' has no CRS QGIS can read; its coordinates are taken to be in the CRS of '{raster_layer.name()}'. "
                "If they are not, set the layer's CRS (Layer Properties > Source) and run again."
            )
        if source_crs != target and not _transformable(source_crs, target):
            # two Mars spheres of other radii (a polar product's and an equatorial map's): QGIS printed "Cannot create transform"
            # and then left the coordinates as they were, which could have placed them anywhere on the image
            pair = (layer.id(), target.toWkt())
            if pair not in self._other_spheres_said:  # once: a season of polar and equatorial products had said it for every pair
                self._other_spheres_said.add(pair)
                feedback.pushInfo(f"'{layer.name()}' ({source_crs.description()}) lies on another Mars sphere than '{raster_layer.name()}' "
                                  f"({target.description()}), between which PROJ finds no transformation: its features are not used over "
                                  "images in that CRS.")
            return [], 0, collections.Counter()
        transform = QgsCoordinateTransform(source_crs, target, context.transformContext())
        request = QgsFeatureRequest()
        try:
            # Ask the provider only for features near the raster (in the layer's own CRS).
            near = _in_the_layers_longitudes(transform.transformBoundingBox(extent, Qgis.TransformDirection.Reverse), source_crs, layer)
            if near is not None:
                request.setFilterRect(near)
        except QgsCsException:
            pass
        image_index = layer.fields().lookupField("image_id")
        request.setSubsetOfAttributes([i for i in (attribute_index, image_index) if i is not None and i >= 0])
        found, failures, elsewhere, unread = [], 0, collections.Counter(), collections.Counter()
        for feature in layer.getFeatures(request):
            if feedback.isCanceled():
                raise QgsProcessingException("Cancelled by the user; no model was trained.")
            geometry = QgsGeometry(feature.geometry())
            if geometry.isNull() or geometry.isEmpty():
                unread["without a geometry"] += 1
                continue
            if geometry.type() != QgsWkbTypes.GeometryType.PolygonGeometry:  # a line or point in a layer of mixed geometry (GeoJSON, CSV)
                unread["lines or points, not polygons"] += 1
                continue
            try:
                geometry.transform(transform)
            except QgsCsException:
                failures += 1
                continue
            if not geometry.intersects(extent_geometry):
                continue
            drawn_on = feature.attribute(image_index) if image_index >= 0 else None
            if drawn_on not in (None, NULL) and str(drawn_on).strip() and str(drawn_on).strip() not in own_ids:
                elsewhere[str(drawn_on).strip()] += 1
                continue
            value = json_label(feature.attribute(attribute_index)) if attribute_index is not None else None
            flat = geometry.get()  # GDAL 3.6 reads no 'PolygonZ' WKT: a layer drawn in 3D had been dropped unread
            flat.dropZValue()
            flat.dropMValue()
            found.append((geometry.asWkt(), value, f"feature {feature.id()} of '{layer.name()}'"))
        if unread:
            feedback.pushInfo(f"'{layer.name()}': {sum(unread.values())} feature(s) near '{raster_layer.name()}' not read as labels or exclusions: "
                              + ", ".join(f"{count} {why}" for why, count in unread.items()))
        return found, failures, elsewhere

    @staticmethod
    def _check_destination(path, parameter):
        try:
            files.check_destination(path, parameter)
        except errors.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None

    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.as_meant(parameters)
        self._other_spheres_said = set()  # (label layer, raster CRS) pairs told of (_geometries_over)
        self.warn_of_what_formats_drop(parameters, feedback)
        # Outputs first: an unwritable folder must not be found after reading every label and training.
        output_model, report = self._output_files(parameters, context, feedback)
        history = file_destination(self.HISTORY, self.sink_destination(parameters, self.HISTORY, context), vector=True)
        check_room([file_destination(self.OUTPUT_MODEL, output_model), file_destination(self.REPORT, report)] + ([history] if history else []),
                   TRAINING_OUTPUT_BYTES, "a model file, its report and the history")
        with gdal_without_pam():  # as RasterLayerParameter loads Detect's INPUT: no .aux.xml beside the user's rasters
            rasters = self._distinct(self.parameterAsLayerList(parameters, self.RASTERS, context), feedback)
        rasters = [georeferenced_by_sidecar(layer) for layer in rasters]
        label_layers = self.parameterAsLayerList(parameters, self.LABELS, context)
        if not rasters:
            raise QgsProcessingException("Choose at least one HiRISE raster (RASTERS) that the labels belong to.")
        if not label_layers:
            raise QgsProcessingException("Choose at least one label layer (LABELS): chunk polygons with a filled label field, or ice-patch outlines.")
        label_field = self.parameterAsString(parameters, self.LABEL_FIELD, context).strip()
        mode = LABEL_MODES[self.parameterAsEnum(parameters, self.LABEL_MODE, context)]
        indices = self._label_field_indices(label_layers, label_field, mode, feedback)
        self._check_labels_hold_features(label_layers)
        base_model = self._checked_base_model(parameters, context, feedback)
        widths = self._widths(self.parameterAsString(parameters, self.WIDTHS, context))
        exclude_layers = self.parameterAsLayerList(parameters, self.EXCLUDE, context)
        band = self.parameterAsInt(parameters, self.BAND, context)
        for raster_layer in rasters:
            check_band(raster_layer, band)
        entries = self._raster_entries(rasters, band, label_layers, exclude_layers, indices, mode, label_field, context, feedback)
        labelled = sum(len(entry["labels"]) for entry in entries)
        if not base_model and labelled < FEW_LABELS_FROM_SCRATCH:
            feedback.pushWarning(f"BASE_MODEL is empty, so the network starts from random weights and learns from your {labelled} label feature(s) "
                                 "alone: far too few to learn what ice looks like. To adapt a model to your labels, give the model that "
                                 "scored them as BASE_MODEL (the bundled default is resources/models/default.hiriseice in the plugin's folder).")

        job = dict(self._training_settings(parameters, context), rasters=entries, label_mode=mode, base_model=base_model or None, widths=widths,
                   output_model=output_model, report=report)
        job_path = os.path.join(processing_temp_folder(), f"hiriseice_train_{uuid.uuid4().hex[:12]}.json")
        try:
            with open(job_path, "w", encoding="utf-8") as handle:
                json.dump(job, handle)
        except OSError as exc:
            files.remove_quietly([job_path])
            raise QgsProcessingException(f"The training job could not be written to QGIS's temporary folder {os.path.dirname(job_path)} "
                                         f"({exc.strerror}). Free some space there (or point TMPDIR elsewhere), and run again.") from None
        feedback.pushInfo(f"Training job: {job_path}")

        try:
            result = run_worker(["train", job_path], feedback, partial_outputs=[partial_path(output_model), partial_path(report)])
        except QgsProcessingException as exc:
            # The engine's worded errors (all labels of one class, a damaged raster) say their fix: no job is kept for them,
            # nor a bug report asked; a crash, or memory run out (to run again with the worker command), keeps it.
            if feedback.isCanceled() or (isinstance(exc, WorkerSaid) and exc.code != "memory"):
                raise
            raise QgsProcessingException(f"{exc}{_kept_for_a_bug_report(job_path)}") from None
        replacing_outputs()  # the worker's model file and report are in place
        self._log_metrics(result.get("metrics") or {}, feedback)

        results = {self.OUTPUT_MODEL: result.get("model_path", output_model), self.REPORT: report}
        try:
            results.update(self._write_history(parameters, context, history, result.get("history") or []))
        except QgsProcessingException as exc:  # the model is what the run was for: it stays
            feedback.pushWarning(f"{exc} The model and its report were written, and the report shows the history.")
        return results

    def _write_history(self, parameters, context, history, rows) -> Dict:
        """{HISTORY: its destination} once written and read back; {} where not wanted. history: its FileDestination, None in memory."""
        fields = make_fields(schema.HISTORY_FIELDS)
        destination = write_sink(self, parameters, self.HISTORY, context, fields, QgsWkbTypes.Type.NoGeometry, QgsCoordinateReferenceSystem(),
                                 features_from_dicts(rows, fields), "training history", history)
        return {self.HISTORY: destination} if destination else {}

    def written_destinations(self, parameters):
        """OUTPUT_MODEL with the extension _output_files gives it, so that REPORT=m.hiriseice beside OUTPUT_MODEL=m
        is seen to replace the model (check_outputs_apart). (OUTPUT_MODEL=labels.gpkg is still refused as written
        over the labels: a slip the user means to correct.)"""
        for destination, vector in super().written_destinations(parameters):
            if destination.parameter == self.OUTPUT_MODEL and not destination.path.lower().endswith(modelfile.EXTENSION):
                destination = dataclasses.replace(destination, path=destination.path + modelfile.EXTENSION)
            yield destination, vector

    def _output_files(self, parameters, context, feedback):
        """(the model file, the report), absolute (the worker runs in the plugin folder: a relative name had put the
        model there), both checked writable before anything is read."""
        output_model = os.path.abspath(self.parameterAsFileOutput(parameters, self.OUTPUT_MODEL, context))
        if not output_model.lower().endswith(modelfile.EXTENSION):
            # Detect and the model settings take only .hiriseice files.
            output_model += modelfile.EXTENSION
            feedback.pushInfo(f"OUTPUT_MODEL: written as {output_model} (a model file's name ends in {modelfile.EXTENSION}, or Detect would not take it)")
        # Without REPORT the guard's report (is the new model worse?) is still written: in QGIS to a temporary file the
        # results viewer keeps for the session; under qgis_process, which deletes its temporary files as it exits, beside the model.
        report = self.parameterAsFileOutput(parameters, self.REPORT, context)
        if not report and QgsApplication.platform() == "qgis_process":
            report = output_model[: -len(modelfile.EXTENSION)] + ".report.html"
            feedback.pushInfo(f"REPORT: not given, so the training report is written beside the model, to {report}")
        report = os.path.abspath(report or QgsProcessingUtils.generateTempFilename("training_report.html"))
        self._check_destination(output_model, "OUTPUT_MODEL")
        self._check_destination(report, "REPORT")
        if os.path.isfile(output_model):
            try:
                replaced = modelfile.describe(modelfile.read_metadata(output_model))
            except (errors.EngineError, KeyError):
                replaced = "a file Detect cannot read as a model"
            # every output the replaced model made names a version no file then holds
            feedback.pushWarning(f"OUTPUT_MODEL: {output_model} holds {replaced}, which the new model replaces once it is written: the outputs "
                                 "made with it will name a model no file holds. Give another file name to keep it.")
        return output_model, report

    @staticmethod
    def _label_field_indices(label_layers, label_field, mode, feedback):
        """{layer id: the label field's index, or None where each outline counts as ice}."""
        indices = {}
        for layer in label_layers:
            index = layer.fields().lookupField(label_field) if label_field else -1
            if index < 0 and mode == "chunks":
                raise QgsProcessingException(
                    f"The label layer '{layer.name()}' has no field '{label_field}' (its fields: {', '.join(layer.fields().names()) or 'none'}). "
                    "Set LABEL_FIELD to the field that holds 1 / 0 (icy / not icy), e.g. the 'label' field of a Detect ice patches output."
                )
            if index < 0:
                feedback.pushInfo(f"'{layer.name()}' has no field '{label_field}': each of its outlines counts as an ice patch.")
            indices[layer.id()] = index if index >= 0 else None
        return indices

    def _checked_base_model(self, parameters, context, feedback):
        """BASE_MODEL's absolute path ('' when training from scratch), its file read before the worker starts."""
        base_model = self.parameterAsFile(parameters, self.BASE_MODEL, context)
        if base_model:
            base_model = os.path.abspath(base_model)
            try:
                base_metadata = modelfile.read_metadata(base_model, self.BASE_MODEL)
            except errors.EngineError as exc:
                raise QgsProcessingException(str(exc)) from None
            feedback.pushInfo(f"Continuing from {modelfile.describe(base_metadata)}: its input size and normalisation are kept.")
            if self.parameterAsEnum(parameters, self.NETWORK, context):
                feedback.pushWarning(f"NETWORK is for training from scratch: the base model's own network ({base_metadata['architecture'].get('name')}) is kept.")
            widths = self.parameterAsString(parameters, self.WIDTHS, context).replace(" ", "")
            if widths != self.parameterDefinition(self.WIDTHS).defaultValue() and self._widths(widths) != list(base_metadata["architecture"].get("widths") or []):
                feedback.pushWarning(f"WIDTHS is for training from scratch: the base model's own widths ({base_metadata['architecture'].get('widths')}) are kept.")
            input_size = self.parameterAsInt(parameters, self.INPUT_SIZE, context)
            if input_size != self.parameterDefinition(self.INPUT_SIZE).defaultValue() and input_size != int(base_metadata["input_size"]):
                feedback.pushWarning(f"INPUT_SIZE is for training from scratch: the base model's own input size ({base_metadata['input_size']} px) is kept.")
        return base_model

    def _distinct(self, rasters, feedback):
        """RASTERS with each file once: a raster given twice had trained on every chunk of it twice. The image IDs of every name
        a file was given by (a link's, a copy's) are kept in self._image_ids, so that labels drawn on any of them are read on it."""
        seen, distinct, files_of_id = {}, [], {}
        self._image_ids = collections.defaultdict(set)
        for layer in rasters:
            key = files.path_key(os.path.realpath(layer.source())) if os.path.exists(layer.source()) else layer.source()  # a link too
            image_id = raster.image_id_of(layer.source())
            other = files_of_id.setdefault(image_id, (key, layer))
            if other[0] != key:  # 2026-04/crater_site.tif and 2026-05/crater_site.tif: each date's labels had been read on the other
                raise QgsProcessingException(
                    f"'{other[1].source()}' and '{layer.source()}' are two files with the same image ID '{image_id}' (their file name): a label "
                    "is read on the image its image_id names, so each one's labels would be read on the other. Give each file its own name (its "
                    "product ID, as ESP_037156_1800_RED.tif), set the image_id of its labels to that name, and run again.")
            if key in seen:
                first = seen[key].name()
                feedback.pushWarning(f"'{layer.name()}' is given more than once in RASTERS; it is read once." if first == layer.name() else
                                     f"'{layer.name()}' is the file of '{first}', given before in RASTERS; it is read once, with the labels drawn on either name.")
            else:
                seen[key] = layer
                distinct.append(layer)
            self._image_ids[seen[key].id()].add(image_id)
        return distinct

    def _raster_entries(self, rasters, band, label_layers, exclude_layers, indices, mode, label_field, context, feedback):
        """The job's rasters, each with the label and exclusion geometries over it in its CRS; a
        raster without labels is left out with a warning, and none left is an error that says why."""
        entries, empty, drawn_elsewhere, unclear_total, features_total = [], [], collections.Counter(), 0, 0
        for raster_layer in rasters:
            require_crs(raster_layer)
            path = raster_path_for_worker(raster_layer, context, feedback)
            image_id = raster.image_id_of(path)
            image_ids = {image_id} | self._image_ids.get(raster_layer.id(), set())  # every name it was given by (_distinct)
            labels, unreadable, elsewhere = [], 0, collections.Counter()
            for layer in label_layers:
                found, failures, other_images = self._geometries_over(layer, raster_layer, context, feedback, indices[layer.id()], image_ids)
                labels.extend({"wkt": wkt, "label": value, "feature": which} for wkt, value, which in found)
                unreadable += failures
                elsewhere += other_images
            exclude = []
            for layer in exclude_layers:
                found, failures, _other_images = self._geometries_over(layer, raster_layer, context, feedback, image_ids=image_ids)
                exclude.extend(wkt for wkt, _, _ in found)
                unreadable += failures
            drawn_elsewhere += elsewhere
            if elsewhere:
                named = ", ".join(f"{name} ({count})" for name, count in elsewhere.most_common(3)) + (" ..." if len(elsewhere) > 3 else "")
                feedback.pushInfo(f"'{raster_layer.name()}' ({image_id}): {sum(elsewhere.values())} label feature(s) over its ground were drawn on other "
                                  f"images, as their image_id says ({named}), and are read on those only. If one of them is this image under another "
                                  "file name, give the raster its original name.")
            if unreadable:
                feedback.pushWarning(
                    f"{unreadable} feature(s) could not be transformed into the CRS of '{raster_layer.name()}' ({raster_layer.crs().description() or raster_layer.crs().toProj()}); "
                    "check that label layers and rasters are on the same body (Mars)."
                )
            filled = sum(1 for item in labels if _says_a_label(item["label"], mode))
            # -1 (Mark unclear) is a value, not an empty field: it had been called empty, with "fill it" for its fix
            unclear = sum(1 for item in labels if _marks_unclear(item["label"], mode))
            unclear_total += unclear
            features_total += len(labels)
            if not labels or (mode == "chunks" and not filled):
                empty.append((raster_layer.name(), bool(labels)))
                name = raster_layer.name()
                why = (f"No label feature drawn on this image lies over '{name}'" if elsewhere else f"No label feature lies over '{name}'") if not labels else \
                      (f"Every label feature has an empty '{label_field}' over '{name}'" if not unclear else
                       f"Every label feature over '{name}' is marked unclear ({unclear} of them), which training leaves out" if unclear == len(labels) else
                       f"No label feature over '{name}' says icy or not icy ({unclear} marked unclear, {len(labels) - unclear} empty)")
                feedback.pushWarning(f"{why}; it is left out of training.")
                continue
            values = (f"{filled} icy or not icy" + (f", {unclear} marked unclear" if unclear else "")) if mode == "chunks" else f"{len(labels) - filled} without a value, so ice as drawn"
            feedback.pushInfo(f"'{raster_layer.name()}': {len(labels)} label feature(s) over it ({values}), {len(exclude)} exclusion polygon(s)")
            entries.append({"path": path, "band": band, "labels": labels, "exclude": exclude})
        if entries:
            return entries
        names = ", ".join(f"'{name}'" for name, _ in empty)
        if drawn_elsewhere and not any(has_features for _, has_features in empty):
            ids = ", ".join(name for name, _ in drawn_elsewhere.most_common(5)) + (" ..." if len(drawn_elsewhere) > 5 else "")
            raise QgsProcessingException(
                f"The label features over the rasters ({names}) were all drawn on other images, as their image_id says: {ids}. Add those "
                "images' rasters to RASTERS (or, where one is a raster here under another file name, give it its original name), and run again.")
        if not any(has_features for _, has_features in empty):
            raise QgsProcessingException(
                f"No feature of the label layers lies over the rasters ({names}). Check that the label layers belong to these images: "
                "their features are reprojected into each raster's CRS and must overlap its extent (is each layer's CRS right?)."
            )
        if unclear_total:
            raise QgsProcessingException(
                f"No label feature over the rasters ({names}) says icy or not icy: {unclear_total} are marked unclear (-1), which training leaves out"
                + (f", and the rest have an empty '{label_field}'" if features_total > unclear_total else "") + ". Label some chunks 1 (icy) and some 0 (not icy), e.g. with the HiRISE Ice Patches toolbar "
                "(Mark icy / Mark not icy), or choose the LABEL_FIELD that holds the labels.")
        raise QgsProcessingException(
            f"Every label feature over the rasters ({names}) has an empty '{label_field}'. Fill it with 1 (icy) or 0 (not icy), "
            "e.g. with the HiRISE Ice Patches toolbar (Mark icy / Mark not icy), or choose the LABEL_FIELD that holds the labels."
        )

    def _training_settings(self, parameters, context):
        """The job's training options, as the worker's job file names them."""
        return {
            "chunk_size": self.parameterAsInt(parameters, self.CHUNK_SIZE, context),
            "input_size": self.parameterAsInt(parameters, self.INPUT_SIZE, context),
            "epochs": self.parameterAsInt(parameters, self.EPOCHS, context),
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "validation_fraction": self.parameterAsDouble(parameters, self.VALIDATION_FRACTION, context),
            "learning_rate": self.parameterAsDouble(parameters, self.LEARNING_RATE, context),
            "patience": self.parameterAsInt(parameters, self.PATIENCE, context),
            "augment": AUGMENT_MODES[self.parameterAsEnum(parameters, self.AUGMENT, context)],
            "seed": self.parameterAsInt(parameters, self.SEED, context),
            "trunk": network.TRUNKS[self.parameterAsEnum(parameters, self.NETWORK, context)],
            "unlabelled": self.parameterAsDouble(parameters, self.UNLABELLED, context),
            "anchor": self.parameterAsDouble(parameters, self.ANCHOR, context),
        }

    @staticmethod
    def _log_metrics(metrics, feedback):
        at = metrics.get("at_icy_threshold") or {}
        if at:
            undefined = {"precision": "- (no chunk called icy)", "recall": "- (no icy chunk)", "roc_auc": "- (one class only)"}
            feedback.pushInfo(
                "Validation at the icy threshold: "
                + ", ".join(f"{key} {at[key]:.3f}" if math.isfinite(at[key]) else f"{key} {undefined.get(key, '-')}"
                            for key in ("accuracy", "precision", "recall", "roc_auc") if isinstance(at.get(key), (int, float)))
            )
        if "best_epoch" in metrics:
            feedback.pushInfo(f"Best epoch {metrics['best_epoch']} (validation loss {metrics.get('best_val_loss', math.nan):.3f}); expected calibration error "
                              f"{metrics.get('ece_uncalibrated', math.nan):.3f} before calibration, {metrics.get('ece_calibrated', math.nan):.3f} after")
        comparison = metrics.get("comparison") or {}
        if comparison.get("worse") or comparison.get("doubtful"):  # the worker logged it among many lines; a warning is its last word
            feedback.pushWarning(comparison["verdict"])


def _in_the_layers_longitudes(box: QgsRectangle, crs: QgsCoordinateReferenceSystem, layer) -> Optional[QgsRectangle]:
    """``box`` of a layer in longitudes and latitudes, moved by a turn where the layer counts longitudes the other way (-180 to 180
    or 0 to 360: a survey's layer saved as a shapefile keeps 182 E but loses the +lon_wrap=180 that said so, and the box came
    out at 178 W, beside none of its features); None where it may lie both ways."""
    if crs.mapUnits() != QgsUnitTypes.DistanceUnit.DistanceDegrees:  # isGeographic() is False for a Mars sphere's in QGIS 3.22
        return box
    held = layer.extent()
    turns = [QgsRectangle(box.xMinimum() + shift, box.yMinimum(), box.xMaximum() + shift, box.yMaximum()) for shift in (0.0, 360.0, -360.0)]
    meeting = [turn for turn in turns if turn.intersects(held)]
    return meeting[0] if len(meeting) == 1 else (box if not meeting else None)


def _transformable(source: QgsCoordinateReferenceSystem, target: QgsCoordinateReferenceSystem) -> bool:
    """Whether PROJ finds a transformation between the two CRSs (OSR's answer; QGIS's own prints its failure and goes on)."""
    try:
        with gdal_exceptions():
            georeference.crs_transform(*(crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED_GDAL) for crs in (source, target)))
        return True
    except RuntimeError:
        return False
