"""hiriseice:survey - detect over many HiRISE images into one resumable GeoPackage, on Dask, in the worker."""

import os

from qgis.core import (
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .algorithm import HiriseIceAlgorithm, LayerListParameter, styling
from .common import checked_model
from .destinations import check_writable, file_destination
from .detect_algorithm import MODEL_FILTER, add_scoring_parameters, option_arguments, scoring_options
from .engine import download, errors, modelfile, survey
from .sources import source_path
from .worker import SURVEY_KEEPS, run_worker


# (output, layer in the survey's GeoPackage, style, name on the map)
SURVEY_LAYERS = (
    ("CHUNKS", "chunks", styling.CHUNKS_QML, "Survey chunks"),
    ("SUMMARY", "summary", styling.SUMMARY_QML, "Survey image summaries"),
    ("FOOTPRINTS_BY_CATEGORY", "footprints", styling.SUMMARY_QML, "Survey footprints by category"),
    ("RUNS", "runs", "", "Survey runs"),
)


class SurveyAlgorithm(HiriseIceAlgorithm):
    NAME = "survey"
    DISPLAY_NAME = "Survey many images"
    KEPT_WHOLE = False
    STOPPED_LEAVES = SURVEY_KEEPS
    GROUP = "Detection"
    GROUP_ID = "detection"

    RASTERS = "RASTERS"
    FOLDER = "FOLDER"
    FOOTPRINTS = "FOOTPRINTS"
    IMAGES_FOLDER = "IMAGES_FOLDER"
    MODEL = "MODEL"
    SCHEDULER = "SCHEDULER"
    WORKERS = "WORKERS"
    IMAGE_MINUTES = "IMAGE_MINUTES"
    OUTPUT = "OUTPUT"
    DONE = "DONE"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"

    def shortHelpString(self):
        return self.tr(
            "<p>Runs <i>Detect ice patches</i> over many HiRISE images into one GeoPackage: every chunk (<i>chunks</i>), one summary "
            "per image (<i>summary</i>), the image footprints coloured by category (<i>footprints</i>) and a table of runs "
            "(<i>runs</i>: image, status done or failed, error, model, runtime). All layers are in Mars geographic coordinates, "
            "since each HiRISE product has its own projection.</p>"
            "<p><b>Images</b>: raster layers or files, a folder of rasters, and/or footprints found by <i>Find HiRISE observations</i> "
            "(tick <i>Selected features only</i> to survey the selection) whose JP2s <i>Download HiRISE products</i> put in the "
            "<b>images folder</b>.</p>"
            "<p><b>Resuming</b>: give the same GeoPackage again and the images already done with the same model (name and version) "
            "are skipped; failed ones are tried again. A failed image (a damaged file, no data) is recorded with its error and the "
            "others go on. Each image is written in one transaction as it finishes, so a cancelled survey keeps what it did. An image "
            f"still running after IMAGE_MINUTES (advanced; {survey.IMAGE_MINUTES:g} by default, 0 for no limit) is given up as failed and its worker "
            "restarted, so a file that never finishes reading (a network drive that hangs) does not hold the batch until morning.</p>"
            "<p><b>Dask</b>: by default a local cluster with one worker process per core (WORKERS), each keeping the model loaded. "
            "SCHEDULER takes the address of a running Dask scheduler (e.g. <i>tcp://10.0.0.5:8786</i>, a SLURM or PBS cluster "
            "started with dask-jobqueue); its workers must run the plugin's worker Python with the plugin folder on PYTHONPATH "
            "and see the images under the same paths.</p>"
            "<p>Chunk size, stride, thresholds, the category rule and the mirror test-time augmentation (TTA, advanced) are those of "
            "<i>Detect ice patches</i>; a survey is resumed only with the settings it was started with.</p>"
        )

    def initAlgorithm(self, config=None):
        self.addParameter(LayerListParameter(self.RASTERS, self.tr("HiRISE rasters"), QgsProcessing.SourceType.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterFile(self.FOLDER, self.tr("Folder of HiRISE rasters"), QgsProcessingParameterFile.Behavior.Folder, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.FOOTPRINTS, self.tr("Footprints from Find (their downloaded JP2s)"), [QgsProcessing.SourceType.TypeVectorAnyGeometry], optional=True))
        self.addParameter(QgsProcessingParameterFile(self.IMAGES_FOLDER, self.tr("Images folder of the footprints (Download's folder)"), QgsProcessingParameterFile.Behavior.Folder, optional=True))
        self.addParameter(
            QgsProcessingParameterFile(self.MODEL, self.tr("Model file (empty = bundled default model)"), QgsProcessingParameterFile.Behavior.File, optional=True, fileFilter=MODEL_FILTER)
        )
        add_scoring_parameters(self)
        self.addParameter(QgsProcessingParameterString(self.SCHEDULER, self.tr("Dask scheduler address (empty = a local cluster)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.WORKERS, self.tr("Local cluster's workers (0 = one per core)"), QgsProcessingParameterNumber.Type.Integer, 0, minValue=0))
        limit = QgsProcessingParameterNumber(self.IMAGE_MINUTES, self.tr("Give up an image still running after (minutes; 0 = no limit)"),
                                             QgsProcessingParameterNumber.Type.Double, survey.IMAGE_MINUTES, minValue=0.0)
        limit.setFlags(limit.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(limit)
        self.addParameter(QgsProcessingParameterFileDestination(self.OUTPUT, self.tr("Survey GeoPackage (an existing survey is resumed)"), "GeoPackage (*.gpkg)"))
        for output, _, _, title in SURVEY_LAYERS:
            self.addOutput(QgsProcessingOutputVectorLayer(output, self.tr(title)))
        self.addOutput(QgsProcessingOutputNumber(self.DONE, self.tr("Images done")))
        self.addOutput(QgsProcessingOutputNumber(self.FAILED, self.tr("Images failed")))
        self.addOutput(QgsProcessingOutputNumber(self.SKIPPED, self.tr("Images skipped (done before with this model)")))

    def processAlgorithm(self, parameters, context, feedback):
        parameters = self.as_meant(parameters)
        rasters = self.raster_paths(parameters, context) + self.footprint_paths(parameters, context, feedback)
        model_path, metadata = checked_model(self.parameterAsFile(parameters, self.MODEL, context))
        feedback.pushInfo(f"Model: {modelfile.describe(metadata)} from {model_path}")
        out = self.checked_output(parameters, context)
        options = scoring_options(self, parameters, context, metadata)
        arguments = ["survey", "--rasters", *rasters, "--out", out, "--model", model_path, "--workers", self.parameterAsInt(parameters, self.WORKERS, context),
                     "--image-minutes", self.parameterAsDouble(parameters, self.IMAGE_MINUTES, context)]
        scheduler = self.parameterAsString(parameters, self.SCHEDULER, context).strip()
        arguments += ["--scheduler", scheduler] if scheduler else []
        arguments += option_arguments(options)
        chunk_style = styling.threshold_styles(options["icy_threshold"], options["hard_low"])[0]  # its place checked before the night's work
        # Nothing partial to remove on cancel: each finished image is already committed, for the rerun to resume.
        result = run_worker(arguments, feedback)

        results = {self.OUTPUT: out, self.DONE: result["done"], self.FAILED: result["failed"], self.SKIPPED: result["skipped"]}
        for output, layer_name, qml, title in SURVEY_LAYERS:
            uri = f"{out}|layername={layer_name}"
            results[output] = uri
            context.addLayerToLoadOnCompletion(uri, QgsProcessingContext.LayerDetails(self.tr(title), context.project(), output))
            if qml:
                self.style_output(context, uri, chunk_style if qml == styling.CHUNKS_QML else qml)
        if result["failed"]:
            feedback.pushWarning(f"{result['failed']} image(s) failed: their errors are in the 'runs' table; run the survey again to retry them.")
        return results

    def raster_paths(self, parameters, context):
        paths = [source_path(layer.source()) for layer in self.parameterAsLayerList(parameters, self.RASTERS, context)]
        folder = self.parameterAsFile(parameters, self.FOLDER, context)
        if folder:
            if not os.path.isdir(folder):
                raise QgsProcessingException(f"FOLDER '{folder}' is not a folder. Choose the folder that holds the images.")
            paths.append(folder)
        return [os.path.abspath(p) for p in paths]

    def footprint_paths(self, parameters, context, feedback):
        """The JP2 of each footprint (selected ones, when so ticked) where hiriseice:download put it."""
        if not parameters.get(self.FOOTPRINTS):
            return []
        source = self.parameterAsSource(parameters, self.FOOTPRINTS, context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.FOOTPRINTS))
        if "jp2_url" not in source.fields().names():
            raise QgsProcessingException("FOOTPRINTS has no jp2_url field: give the footprints made by 'Find HiRISE observations'.")
        folder = self.parameterAsFile(parameters, self.IMAGES_FOLDER, context)
        if not folder or not os.path.isdir(folder):
            raise QgsProcessingException(
                "IMAGES_FOLDER must be the folder where 'Download HiRISE products' put the footprints' JP2s"
                + (f" ('{folder}' is not a folder)." if folder else ".")
            )
        request = QgsFeatureRequest().setFlags(QgsFeatureRequest.Flag.NoGeometry)
        urls = [f["jp2_url"] for f in source.getFeatures(request) if isinstance(f["jp2_url"], str) and f["jp2_url"]]
        try:
            paths = [os.path.join(os.path.abspath(folder), download.DownloadItem(url).name) for url in urls]
        except errors.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        try:
            return download.downloaded_jp2s(paths, folder, feedback.pushWarning, self.IMAGES_FOLDER)
        except errors.EngineError as exc:
            raise QgsProcessingException(str(exc)) from None

    def checked_output(self, parameters, context) -> str:
        destination = file_destination(self.OUTPUT, self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        if destination is None or not destination.path.lower().endswith(".gpkg"):
            raise QgsProcessingException(f"OUTPUT must be a GeoPackage file (*.gpkg), not '{destination.path if destination else ''}'.")
        check_writable(destination)
        return destination.path

    def checked_parameter_values(self, parameters, context):
        ok, message = super().checked_parameter_values(parameters, context)
        if ok and not any(parameters.get(name) for name in (self.RASTERS, self.FOLDER, self.FOOTPRINTS)):
            return False, self.tr("Nothing to survey: give RASTERS, a FOLDER of rasters, or FOOTPRINTS from 'Find HiRISE observations' with their IMAGES_FOLDER.")
        return ok, message
