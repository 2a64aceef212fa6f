"""hiriseice:detect - score a HiRISE image's chunks for ice with a model file, in the worker."""

import math
import os
import shutil
from typing import Dict, List, NamedTuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsWkbTypes,
)

from .algorithm import HiriseIceAlgorithm, RasterLayerParameter, styling
from .common import check_band, checked_model, features_from_dicts, make_fields, output_crs, raster_path_for_worker, require_crs, write_sink
from .destinations import (
    check_free_space,
    check_labels_not_replaced,
    check_layer_name,
    check_not_replaced_later,
    check_writable,
    file_destination,
    remove_created,
    replacing_outputs,
    report_replaced_layers,
)
from .engine import chunking, errors, files, gdal_exceptions, georeference, grid, imagechecks, modelfile, raster, rules, schema
from .worker import partial_path, run_worker


class OutputLayer(NamedTuple):
    fields: tuple  # model/schema.py
    geometry: int  # QgsWkbTypes
    geometry_key: str  # where the worker's rows carry the WKT
    qml: str
    what: str  # for messages


MODEL_FILTER = "HiRISE Ice Patches model (*.hiriseice);;All files (*.*)"
HTML_FILTER = "HTML files (*.html)"


class DetectAlgorithm(HiriseIceAlgorithm):
    NAME = "detect"
    DISPLAY_NAME = "Detect ice patches"
    GROUP = "Detection"
    GROUP_ID = "detection"

    INPUT = "INPUT"
    MODEL = "MODEL"  # CHUNK_SIZE ... TTA: add_scoring_parameters, shared with the survey
    OUTPUT = "OUTPUT"
    SUMMARY = "SUMMARY"
    REPORT = "REPORT"
    PROBABILITY_RASTER = "PROBABILITY_RASTER"
    CATEGORY = "CATEGORY"
    CHUNKS = "CHUNKS"
    ICY_CHUNKS = "ICY_CHUNKS"
    MEAN_PROBABILITY = "MEAN_PROBABILITY"
    OUTPUT_FIELDS = {OUTPUT: schema.DETECTION_FIELDS, SUMMARY: schema.SUMMARY_FIELDS}

    OUTPUT_LAYERS = {
        OUTPUT: OutputLayer(schema.DETECTION_FIELDS, QgsWkbTypes.Type.Polygon, "wkt", styling.CHUNKS_QML, "chunk"),
        SUMMARY: OutputLayer(schema.SUMMARY_FIELDS, QgsWkbTypes.Type.MultiPolygon, "footprint_wkt", styling.SUMMARY_QML, "summary"),
    }

    def shortHelpString(self):
        return self.tr(
            "<p>Finds small residual water-ice patches in a HiRISE image with the convolutional network of Gergács &amp; Kereszturi "
            "(a small Xception). The image is cut into square chunks, each chunk is decimated to the network's input size and "
            "scored with the probability that it shows ice.</p>"
            "<p><b>Model</b>: a <i>*.hiriseice</i> file written by <i>Train ice-patch model</i>; empty = the model bundled with the plugin. "
            "<b>Chunk size</b>: 0 = the size the model was trained for (1024 px for the paper's model). "
            "<b>Stride</b>: 0 = the chunk size; over the chunk size it leaves strips never looked at (said in the log). <b>Minimum valid share</b>: chunks whose central region holds less image data "
            "are dropped (no-data borders of rotated products). <b>Batch size</b>: chunks per network call (memory vs speed).</p>"
            "<p><b>Thresholds</b> (the paper's): a chunk is <i>icy</i> at p ≥ 0.6 (ICY_THRESHOLD), <i>hard to identify</i> at "
            "0.4 ≤ p &lt; 0.6 (HARD_LOW) and <i>not icy</i> below.</p>"
            "<p><b>Image category rule</b> (CATEGORY_RULE): <i>paper</i> (default) grades the image by the paper's section 5, as we read it "
            "where its text leaves gaps (README, Rules). With more than "
            "half of the chunks icy it is <i>good</i> above a mean p of 0.6, else <i>hard to identify</i>. With at least 2 icy chunks "
            "but not more than half, it is <i>good</i> above a mean p of 0.2 and <i>hard to identify</i> from 0.01. Anything else is <i>bad</i>, "
            "including images with 0 or 1 icy chunk (our reading of the paper's \"more than 1 chunk\"), unless that one is the image's only chunk "
            "(then more than half of its chunks are icy). The probabilities are the model's "
            "calibrated ones (averaged with the east-west mirror when TTA is on, the default), where the paper's were the network's own. <i>conservative</i>: "
            "<i>hard to identify</i> whenever at least half of the chunks are hard to identify; otherwise <i>good</i> with at least 10 % icy chunks "
            "or mean p ≥ 0.5, <i>bad</i> under 2 % icy chunks and mean p &lt; 0.3, and <i>hard to identify</i> in between.</p>"
            "<p><b>Band</b> (advanced): 0 = automatic (a single band, or the mean of all bands for colour products).</p>"
            "<p><b>Outputs</b>: the chunk layer (probability, class, and an empty <i>label</i> field for your own judgement, "
            "to be filled with the HiRISE Ice Patches labelling tools and used for retraining). It is styled by probability, in classes "
            "edged at the paper's 0.4 and 0.6 (other thresholds become edges too: the legend names each class as the layer's "
            "<i>class</i> does and fills it as below, while its colour stays that of its probability): <i>not icy</i> chunks are left unfilled (a thin blue outline below 0.2, a faint "
            "blue-green tint from 0.2), <i>hard to identify</i> ones are pale green to pale yellow, edged by a dark dashed line, and "
            "<i>icy</i> ones orange (0.6) to red (0.8 and above), edged by a bolder dark solid line: the edge tells the classes apart "
            "without their colours (in greyscale print, or to a colour-blind reader). No fill is opaque, so the terrain stays visible under the colour. "
            "Its <i>review_rank</i> says which chunks to label first (1 = first): those whose probability lies nearest the icy threshold, "
            "where the model is least sure, spread over the image; nearness is measured in log-odds, so p = 0.02 and p = 0.99 lie about "
            "equally far from the default threshold 0.6. Also written: the image summary (footprint, counts, mean and max "
            "probability, category) and, when REPORT is given, an HTML report with histogram and quicklook.</p>"
            "<p><b>Ice probability raster</b> (PROBABILITY_RASTER, optional): a GeoTIFF in the image's CRS with the ice probability "
            "of every cell of the network's score map (128 px of the image for the default model's 1024-px chunks), "
            "so you see where inside a chunk the patch lies; transparent below 0.2, then in the chunk layer's colours (blue-green, pale green to pale yellow, orange to red). A chunk's probability is "
            "the mean of this map's logits over the chunk (an edge chunk's over its padding beyond the image too, and a chunk's over the image's no-data border, neither of which the raster holds: its cells less than half on the image are left empty). With a stride shorter than the chunk (e.g. 512 for 1024-px chunks) every "
            "chunk is read off this map, and the chunks between the map's tiles that may hide a patch cut by their edges are "
            "scored alone again: on a whole observation such a grid cost 2.3-2.8x the grid at STRIDE = CHUNK, not the 3.3-3.9x of scoring every chunk alone. In the report's quicklook such overlapping chunks are each drawn over the ground nearest their centre, so that they tile the picture; on the map each chunk keeps its whole footprint, as you select and label it.</p>"
            "<p><b>Mirror test-time augmentation</b> (TTA, advanced, on by default): each chunk is also scored mirrored east-west (which "
            "keeps the sun's side) and the two logits averaged: twice the network time, which sets a whole observation's detect time with the default model (8-10 s on two cores; README, Performance), "
            "for 0.001-0.009 more ROC AUC on every kind of ice and fewer false alarms (real terrain called icy 3.6 % -> 3.0 %) on the default model's held-out observations. "
            "Untick it for a quick first look.</p>"
            "<p>Every destination is checked before the network starts. A table named in a GeoPackage "
            "(<i>ogr:dbname='x.gpkg' table=\"chunks\" (geom)</i>) is replaced with its style on a rerun; a plain <i>x.gpkg</i> "
            "replaces the whole file, as everywhere in QGIS; the log names what was replaced. Relative paths are relative to the "
            "folder QGIS or qgis_process was started in.</p>"
            "<p>The network runs in a separate Python with TensorFlow (the <i>worker</i>), never inside QGIS. If it is missing, "
            "install it from HiRISE Ice Patches › Worker settings… › Reinstall… (in a checkout of its source on Debian or Ubuntu also "
            "<i>bash scripts/install</i>), or set the worker's Python there.</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(RasterLayerParameter(self.INPUT, self.tr("HiRISE raster")))
        self.addParameter(
            QgsProcessingParameterFile(self.MODEL, self.tr("Model file (empty = bundled default model)"), QgsProcessingParameterFile.Behavior.File, optional=True, fileFilter=MODEL_FILTER)
        )
        add_scoring_parameters(self)
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, self.tr("Ice probability of chunks"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFeatureSink(self.SUMMARY, self.tr("Image summary"), QgsProcessing.SourceType.TypeVectorPolygon, optional=True, createByDefault=True))
        self.addParameter(QgsProcessingParameterFileDestination(self.REPORT, self.tr("Detection report"), HTML_FILTER, optional=True))
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.PROBABILITY_RASTER, self.tr("Ice probability raster"), optional=True, createByDefault=False)
        )
        self.addOutput(QgsProcessingOutputString(self.CATEGORY, self.tr("Image category")))
        self.addOutput(QgsProcessingOutputNumber(self.CHUNKS, self.tr("Chunks scored")))
        self.addOutput(QgsProcessingOutputNumber(self.ICY_CHUNKS, self.tr("Icy chunks")))
        self.addOutput(QgsProcessingOutputNumber(self.MEAN_PROBABILITY, self.tr("Mean chunk probability")))

    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.as_meant(parameters)
        layer = self.raster_layer(parameters, self.INPUT, context)
        require_crs(layer)
        model_path, metadata = checked_model(self.parameterAsFile(parameters, self.MODEL, context))
        feedback.pushInfo(f"Model: {modelfile.describe(metadata)} from {model_path}")
        options = self.worker_options(parameters, context, layer, metadata)
        sinks = self.checked_sink_destinations(parameters, context)
        self.warn_of_what_formats_drop(parameters, feedback)
        report = self.checked_report(parameters, context)
        probability_raster = self.checked_probability_raster(parameters, context)
        raster_path = raster_path_for_worker(layer, context, feedback)
        check_raster_for_detection(raster_path, options)  # first: a damaged header's size is the fault, not the disk
        check_free_space(sinks.values(), math.prod(grid.grid_shape(layer.width(), layer.height(), options["chunk_size"], options["stride"])))

        chunk_style, probability_style = styling.threshold_styles(options["icy_threshold"], options["hard_low"])  # made before the worker's run
        arguments = ["detect", raster_path, "--model", model_path] + (["--report", report] if report else [])
        arguments += ["--probability-raster", probability_raster] if probability_raster else []
        arguments += option_arguments(options)
        partial_outputs = [partial_path(path) for path in (report, probability_raster) if path]
        # a failed or stopped worker removes the raster and report it had put in place (model/__main__.py) and names them as it
        # writes them, for run_worker to remove where it was killed: only it knows which are its own, as another run may write the same names
        result = run_worker(arguments, feedback, partial_outputs=partial_outputs)
        replacing_outputs()  # the worker's report and probability raster are in place
        chunks, summary = result.get("chunks") or [], result.get("summary") or {}

        # Only now, with the worker done, are the output layers created.
        read = result.get("raster") or {}
        # a turned map was read through a north-up view of it (raster.north_up_view): the chunks lie in that map
        view_crs = QgsCoordinateReferenceSystem.fromWkt(read["crs_wkt"]) if read.get("north_up_view") else layer.crs()
        crs = output_crs(view_crs, read.get("crs_wkt", ""))
        results = {
            self.CATEGORY: summary.get("category"),
            self.CHUNKS: summary.get("chunks"),
            self.ICY_CHUNKS: summary.get("icy_chunks"),
            self.MEAN_PROBABILITY: summary.get("mean_probability"),
        }
        try:
            results[self.OUTPUT] = self.write_layer(parameters, self.OUTPUT, context, feedback, sinks.get(self.OUTPUT), crs, chunks, chunk_style)
            summary_destination = self.write_layer(parameters, self.SUMMARY, context, feedback, sinks.get(self.SUMMARY), crs, [summary])
        except QgsProcessingException as exc:
            remove_created(sinks.values())
            removed = [what for what, path in (("report", report), ("ice-probability raster", probability_raster)) if files.remove_quietly([path])]
            if removed:
                raise QgsProcessingException(f"{exc} This run's {' and '.join(removed)} {'were' if len(removed) > 1 else 'was'} removed too: a run is "
                                             "kept whole or not at all.") from None
            raise
        for name, destination in ((self.OUTPUT, results[self.OUTPUT]), (self.SUMMARY, summary_destination)):
            name_after_image_and_model(context, destination, self.parameterDefinition(name).description(), summary)
        if report:
            results[self.REPORT] = report
        if probability_raster:
            results[self.PROBABILITY_RASTER] = self.styled_probability_raster(context, probability_raster, probability_style)
        if summary_destination:
            results[self.SUMMARY] = summary_destination
        feedback.pushInfo(
            f"{summary.get('image_id')}: {summary.get('category')} ({options['category_rule']} rule) - {summary.get('icy_chunks')} icy and "
            f"{summary.get('hard_chunks')} hard to identify of {summary.get('chunks')} chunks, mean probability {summary.get('mean_probability')}"
        )
        return results

    def worker_options(self, parameters, context, layer, metadata) -> Dict:
        """The worker's detect options (model/__main__.py), checked here before its seconds-long start."""
        options = scoring_options(self, parameters, context, metadata)
        check_band(layer, options["band"])
        return options

    def checked_sink_destinations(self, parameters, context) -> Dict:
        """{parameter: FileDestination} of the layer outputs written to files, each checked writable."""
        sinks = {}
        for name in (self.OUTPUT, self.SUMMARY):
            destination = file_destination(name, self.sink_destination(parameters, name, context), vector=True)
            if destination is not None:
                check_writable(destination)
                check_layer_name(destination)
                check_labels_not_replaced(destination)
                sinks[name] = destination
        if len(sinks) == 2:
            check_not_replaced_later(sinks[self.OUTPUT], sinks[self.SUMMARY])
        return sinks

    def checked_report(self, parameters, context) -> str:
        """The report's absolute path (the worker runs elsewhere), checked writable; empty: no report."""
        destination = file_destination(self.REPORT, self.parameterAsFileOutput(parameters, self.REPORT, context))
        if destination is None:
            return ""
        check_writable(destination)
        return destination.path

    def checked_probability_raster(self, parameters, context) -> str:
        """The probability raster's absolute path, checked writable; empty: not wanted."""
        destination = file_destination(self.PROBABILITY_RASTER, self.parameterAsOutputLayer(parameters, self.PROBABILITY_RASTER, context))
        if destination is None:
            return ""
        if os.path.splitext(destination.path)[1].lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(
                f"The ice probability raster is written as a GeoTIFF; give '{destination.path}' the extension .tif."
            )
        check_writable(destination)
        return destination.path

    def styled_probability_raster(self, context, path: str, qml: str) -> str:
        """Its style beside it (<name>.qml, which QGIS loads as the default style) and on the layer the GUI loads."""
        try:
            shutil.copyfile(qml, os.path.splitext(path)[0] + ".qml")
        except OSError:
            pass  # the raster itself is complete; it is styled in the GUI still
        styling.set_post_processor(context, path, qml)
        return path

    def write_layer(self, parameters, name, context, feedback, on_disk, crs, rows: List[Dict], qml: str = "") -> str:
        """Create the output `name`, fill it and have it styled (by its OutputLayer's style unless given `qml`);
        its destination id ('' when skipped). on_disk: its FileDestination, None for a memory or database output."""
        layer = self.OUTPUT_LAYERS[name]
        if on_disk is not None:
            report_replaced_layers(on_disk, feedback)
        fields = make_fields(layer.fields)
        features = features_from_dicts(rows, fields, layer.geometry_key, multi=layer.geometry == QgsWkbTypes.Type.MultiPolygon)
        destination = write_sink(self, parameters, name, context, fields, layer.geometry, crs, features, layer.what, on_disk, qml or layer.qml)
        if not destination:
            if name == self.OUTPUT:
                raise QgsProcessingException(self.invalidSinkError(parameters, name))
            return ""
        self.style_output(context, destination, qml or layer.qml)
        return destination


def name_after_image_and_model(context, destination: str, description: str, summary: Dict) -> None:
    """Name a loaded output after its image and model ("Ice probability of chunks, ESP_..._RED (hiriseice-default 2026...)"),
    unless its name was chosen: runs on several images or with two models being compared had loaded layers of one name."""
    if not destination or not context.willLoadLayerOnCompletion(destination):
        return
    details = context.layerToLoadOnCompletionDetails(destination)
    if details.name == description:
        details.name = f"{description}, {summary.get('image_id')} ({summary.get('model_name')} {summary.get('model_version')})"


def add_scoring_parameters(algorithm) -> None:
    """CHUNK_SIZE ... TTA: how detect grids and scores, shared by hiriseice:detect and hiriseice:survey."""
    tr = algorithm.tr
    algorithm.addParameter(QgsProcessingParameterNumber("CHUNK_SIZE", tr("Chunk size (pixels; 0 = the model's)"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
    algorithm.addParameter(QgsProcessingParameterNumber("STRIDE", tr("Stride (pixels; 0 = chunk size)"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
    algorithm.addParameter(
        QgsProcessingParameterNumber(
            "MIN_VALID", tr("Minimum valid share of the chunk centre"), QgsProcessingParameterNumber.Type.Double, chunking.DEFAULT_MIN_VALID, minValue=0.0, maxValue=1.0
        )
    )
    algorithm.addParameter(QgsProcessingParameterNumber("BATCH_SIZE", tr("Batch size (chunks per network call)"), QgsProcessingParameterNumber.Type.Integer, chunking.DEFAULT_BATCH_SIZE, minValue=1))
    algorithm.addParameter(
        QgsProcessingParameterNumber("ICY_THRESHOLD", tr("Icy at probability ≥"), QgsProcessingParameterNumber.Type.Double, rules.ICY_THRESHOLD, minValue=0.0, maxValue=1.0)
    )
    algorithm.addParameter(
        QgsProcessingParameterNumber("HARD_LOW", tr("Hard to identify at probability ≥"), QgsProcessingParameterNumber.Type.Double, rules.HARD_LOW, minValue=0.0, maxValue=1.0)
    )
    category_rule = QgsProcessingParameterEnum("CATEGORY_RULE", tr("Image category rule"), list(rules.CATEGORY_RULES), defaultValue=rules.DEFAULT_CATEGORY_RULE)
    category_rule.setUsesStaticStrings(True)  # CATEGORY_RULE=paper on the command line, not an index
    algorithm.addParameter(category_rule)
    band = QgsProcessingParameterNumber("BAND", tr("Band (0 = automatic)"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0)
    tta = QgsProcessingParameterBoolean("TTA", tr("Mirror test-time augmentation (average with the east-west mirror)"), True)
    for advanced in (band, tta):
        advanced.setFlags(advanced.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        algorithm.addParameter(advanced)


def scoring_options(algorithm, parameters, context, metadata) -> Dict:
    """The values of add_scoring_parameters as the worker's options, checked by the engine's rules."""
    chunk_size = algorithm.parameterAsInt(parameters, "CHUNK_SIZE", context) or int(metadata["chunk_size"])
    options = dict(
        chunk_size=chunk_size,
        stride=algorithm.parameterAsInt(parameters, "STRIDE", context) or chunk_size,
        min_valid=algorithm.parameterAsDouble(parameters, "MIN_VALID", context),
        batch_size=algorithm.parameterAsInt(parameters, "BATCH_SIZE", context),
        icy_threshold=algorithm.parameterAsDouble(parameters, "ICY_THRESHOLD", context),
        hard_low=algorithm.parameterAsDouble(parameters, "HARD_LOW", context),
        band=algorithm.parameterAsInt(parameters, "BAND", context),
        category_rule=algorithm.parameterAsEnumString(parameters, "CATEGORY_RULE", context),
        tta=algorithm.parameterAsBoolean(parameters, "TTA", context),
    )
    try:
        rules.check_thresholds(options["icy_threshold"], options["hard_low"])
        rules.check_category_rule(options["category_rule"])
        chunking.check_grid_parameters(options["chunk_size"], options["stride"], options["min_valid"])
    except errors.EngineError as exc:
        raise QgsProcessingException(str(exc)) from None
    return options


def option_arguments(options: Dict) -> List[str]:
    """The worker's command-line options for scoring_options' values: --tta / --no-tta for a flag."""
    arguments = []
    for option, value in options.items():
        name = option.replace("_", "-")
        arguments += ([f"--{name}" if value else f"--no-{name}"] if isinstance(value, bool) else [f"--{name}", value])
    return arguments


def check_raster_for_detection(raster_path: str, options: Dict) -> None:
    """The engine's own checks of the raster (pixel type, size against the chunk), here in seconds
    rather than after the worker's start; the worker repeats them for its command-line users."""
    try:
        # with PAM, as the worker reads it: a CRS may live in the .aux.xml alone, and only reading leaves it unwritten
        with gdal_exceptions(), raster.RasterSource(raster_path, options["band"]) as source:
            imagechecks.check_size(raster_path, source.info.width, source.info.height, options["chunk_size"])
            info = source.info
            if georeference.north_turn(info.crs_wkt, info.geotransform, info.width, info.height) is None:  # else the worker reads a north-up view
                georeference.check_north_up(raster_path, info.geotransform)
    except errors.EngineError as exc:
        raise QgsProcessingException(str(exc)) from None
