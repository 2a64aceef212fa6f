"""What the HiRISE Ice Patches algorithms share: translation, icon, instances, the input raster
loaded without sidecar files, styled outputs, and a failure's message printed once by qgis_process."""

import contextlib
import difflib
import functools
import os
import re
import sys
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .destinations import (FORMATS_WITHOUT_TABLES, FileDestination, check_holds_mars, check_layer_name, check_not_an_input, check_not_into_a_survey, check_outputs_apart, check_styles_apart, check_writable, cut_field_names_warning, file_destination,
                           kept_whole, percent_escape_message, processing_temp_folder, without_geometry_warning)
from .engine import errors, files, gdal_exceptions, icon_path, protocol, raster
from .sources import source_path
from .worker import TerminatedBySignal, terminating_signals_raise
from . import styling


def _whole_and_said_once(process_algorithm):
    """processAlgorithm, whose output files are as they were before it where it fails (destinations.kept_whole;
    not where the algorithm keeps what it finished, KEPT_WHOLE False), and whose QgsProcessingException reaches a
    qgis_process user as one line.

    qgis_process echoes every critical message-log entry on stderr, and QGIS logs a failed
    algorithm's message twice besides printing it as "ERROR:" (the catch in
    QgsProcessingAlgorithm::runPrepared, then QgsProcessingFeedback::reportError), so each error
    showed three times in QGIS 3.22; native algorithms do the same, and QGIS's current source
    still does. qgis_process runs one algorithm and exits after its failure, so the echo is
    switched off for the rest of that process and the "ERROR:" line stays. Elsewhere the message
    log is a panel, not the console, and is left alone.
    """

    @functools.wraps(process_algorithm)
    def wrapper(self, parameters, context, feedback):
        try:
            # A graphical model's child and a batch row run without QGIS 3.22 asking checkParameterValues first: train's
            # HISTORY had been written over the label GeoPackage it read
            ok, message = self.checkParameterValues(parameters, context)
            if not ok:
                raise QgsProcessingException(message)
            outputs = [destination for destination, _vector in self.written_destinations(parameters)] if self.KEPT_WHOLE else []
            # SIGTERM, SIGHUP and SIGINT raise for the whole run, not only while a worker runs: chunk's exports, and the outputs written after the worker
            with terminating_signals_raise():
                try:
                    with kept_whole(outputs, feedback.pushInfo):
                        return process_algorithm(self, self.as_meant(parameters), context, feedback)
                except TerminatedBySignal as exc:
                    raise QgsProcessingException(f"Stopped by {exc}: {self.STOPPED_LEAVES}.") from None
        except QgsProcessingException as exc:
            # A name holding a bidirectional control (U+202E) turned the rest of the error's line right to left; the
            # worker's messages come escaped (protocol.shown), the provider's own are escaped here. Their line breaks stay:
            # a worker's last words are lines of their own.
            message = str(exc).translate(protocol.BIDI_CONTROLS)
            if QgsApplication.platform() == "qgis_process":
                QgsApplication.messageLog().blockSignals(True)
                if "--json" in QCoreApplication.arguments():  # 3.22 keeps the error in a JSON log it never prints when the run fails
                    print(f"ERROR:\t{message}", file=sys.stderr, flush=True)
            # QGIS 3.22 never frees a Python algorithm's exception, whose frames hold the context: the layers it loaded
            # (the input raster, open) stayed open for the life of the process, one more for each image a batch failed on.
            # Those of earlier runs sharing the context stay, but not this run's inputs given by path: processing.run
            # checks the parameters, loading them, on another instance than the one that runs.
            store = context.temporaryLayerStore()
            given = {path for path in (source_path(value) for value in parameters.values() if isinstance(value, str)) if os.path.isfile(path)}
            before = self._layers_before_run or set()
            for layer_id, layer in store.mapLayers().items():
                if layer_id not in before or source_path(layer.source()) in given:
                    store.removeMapLayer(layer_id)
            if message == str(exc) and type(exc) is QgsProcessingException:
                raise
            # QGIS takes only the class itself for a failure in words: a subclass (worker.WorkerSaid) reached it as a traceback
            raise QgsProcessingException(message) from None

    return wrapper


@contextlib.contextmanager
def gdal_without_pam():
    """Rasters GDAL opens in this thread inside the block never write a .aux.xml beside themselves.

    QGIS computes a new raster layer's statistics for its default contrast, and GDAL's PAM saves
    them beside the file when the layer closes: a file the user did not ask for, next to HiRISE
    data that is often read-only. GDAL reads the option once, when it opens the dataset.
    """
    previous = gdal.GetThreadLocalConfigOption("GDAL_PAM_ENABLED", None)
    gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", "NO")
    try:
        yield
    finally:
        gdal.SetThreadLocalConfigOption("GDAL_PAM_ENABLED", previous)


def unreadable_raster_message(path: str) -> str:
    """The engine's message for a file GDAL cannot open as a raster; empty when GDAL can."""
    try:
        with gdal_exceptions(), gdal_without_pam(), raster.RasterSource(os.path.abspath(path), require_georeferencing=False):
            return ""
    except errors.EngineError as exc:
        return str(exc)


@contextlib.contextmanager
def gdal_errors_unprinted():
    """GDAL's complaints in this thread go nowhere inside the block: loading a damaged raster as a
    layer printed its decoding errors on stderr before the engine's one message about it."""
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()


def unreadable_vector_message(path: str, polygons_only: bool) -> str:
    """Why a file cannot be a vector (or polygon) layer, with the fix; empty where it can."""
    from osgeo import ogr

    with gdal_errors_unprinted():
        source = ogr.Open(path)
    if source is None:
        return f"'{path}' exists but is not a vector layer GDAL can read. Give a GeoPackage or shapefile, e.g. an output of Detect ice patches."
    polygons = (ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface, ogr.wkbUnknown)
    if polygons_only and not any(ogr.GT_Flatten(layer.GetGeomType()) in polygons for layer in source):
        return f"'{path}' holds no polygon layer, and this parameter takes polygons: chunk polygons (the output of Detect ice patches) or drawn outlines."
    return ""


def unloadable_layer_message(value, kind: str, context) -> str:
    """Why a layer parameter's path cannot be loaded as a ``kind`` (layer_kind) layer, with the
    fix; empty where it can, or where it is not a plain path (a layer of the project, a /vsi path,
    a bare name without an extension), so QGIS's own check decides; "scene.tif" is a file in the current folder. QGIS says "not found" of a missing file, a folder
    and an unreadable raster alike, and "Incorrect parameter value" of a list."""
    if not isinstance(value, str) or not value or value.startswith("/vsi") or re.match(r"^\w{2,}:", value):
        return ""  # not a path; a driver's prefix (NETCDF:"a.nc":var, GPKG:a.gpkg:table) or a URL, QGIS decides
    path = source_path(value)
    project = context.project() if context is not None else None
    if project is not None and (project.mapLayer(value) or project.mapLayersByName(value)):
        return ""
    if not os.path.dirname(path) and not os.path.splitext(path)[1]:
        return ""  # a bare name, as of a layer: QGIS looks it up
    missing = files.missing_path_message(os.path.abspath(path), "raster" if kind == "raster" else "vector")
    if missing:
        return missing
    if kind != "raster" and percent_escape_message(path, "The layer"):
        return percent_escape_message(os.path.abspath(path), "The layer")
    return unreadable_raster_message(path) if kind == "raster" else unreadable_vector_message(path, kind == "polygon")


def layer_kind(definition) -> str:
    """"raster", "polygon", "vector" or "" (not a layer parameter) for a parameter definition."""
    if isinstance(definition, QgsProcessingParameterRasterLayer):
        return "raster"
    if isinstance(definition, QgsProcessingParameterMultipleLayers):
        return {QgsProcessing.SourceType.TypeRaster: "raster", QgsProcessing.SourceType.TypeVectorPolygon: "polygon"}.get(definition.layerType(), "vector")
    if isinstance(definition, QgsProcessingParameterFeatureSource):
        return "polygon" if definition.dataTypes() == [QgsProcessing.SourceType.TypeVectorPolygon] else "vector"
    return ""


def layer_paths(value) -> List:
    return [value] if isinstance(value, str) else [item for item in value if isinstance(item, str)] if isinstance(value, (list, tuple)) else []


class RasterLayerParameter(QgsProcessingParameterRasterLayer):
    """A raster layer parameter whose layer, when given as a path, is loaded without PAM.

    qgis_process and processing.run load such a layer while checking the parameter values,
    before processAlgorithm, and that first load is the one whose dataset GDAL keeps.
    """

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802
        if isinstance(value, str) and raster.waiting_file_message(source_path(value)):
            return True  # QGIS's load would wait on it for ever; the algorithm's checkParameterValues says what it is
        with gdal_without_pam(), gdal_errors_unprinted():
            return super().checkValueIsAcceptable(value, context)

    def clone(self):
        copy = RasterLayerParameter(self.name(), self.description(), self.defaultValue(), bool(self.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional))
        copy.setFlags(self.flags())
        copy.setHelp(self.help())
        return copy


class LayerListParameter(QgsProcessingParameterMultipleLayers):
    """A list of layers that QGIS does not try to load where a path cannot be loaded: every
    provider QGIS tries on a damaged file printed its complaint (GDAL's six times, then the mesh
    driver's) before the algorithm's one message about it (HiriseIceAlgorithm.checkParameterValues)."""

    def checkValueIsAcceptable(self, value, context=None):  # noqa: N802
        if any(unloadable_layer_message(path, layer_kind(self), context) for path in layer_paths(value)):
            return True  # the algorithm's checkParameterValues says what is wrong with it, and how to fix it
        with gdal_without_pam(), gdal_errors_unprinted():  # its rasters' statistics never go to a .aux.xml beside them
            return super().checkValueIsAcceptable(value, context)

    def clone(self):
        copy = LayerListParameter(self.name(), self.description(), self.layerType(), self.defaultValue(), bool(self.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional))
        copy.setFlags(self.flags())
        copy.setHelp(self.help())
        copy.setMinimumNumberInputs(self.minimumNumberInputs())
        return copy


# The words a yes-or-no parameter takes, in any case.
BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def value_message(definition, value, context) -> str:
    """For a plain value QGIS would refuse with only "Incorrect parameter value for NAME", the message
    that gives what the parameter takes: a number's range, an option list's choices; "" otherwise."""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or value == "":
        return ""  # data-defined properties, lists and empty values are left to QGIS
    if isinstance(definition, QgsProcessingParameterNumber):
        wanted = _number_wanted(definition, value)
    elif isinstance(definition, QgsProcessingParameterBoolean) and isinstance(value, str):  # a word as_meant did not know
        wanted = "true or false (yes or no, on or off, 1 or 0)"
    elif isinstance(definition, QgsProcessingParameterEnum) and not definition.checkValueIsAcceptable(value, context):
        choices = definition.options()
        wanted = "one of " + (", ".join(choices) if definition.usesStaticStrings() else "; ".join(f"{i} ({choice})" for i, choice in enumerate(choices)))
    elif isinstance(definition, QgsProcessingParameterFile) and not definition.checkValueIsAcceptable(value, context):
        # QGIS takes only names its file filter's first pattern would not extend (a model file's .hiriseice)
        extension = re.search(r"\*(\.[^ ;)*]+)", definition.fileFilter() or "")
        if os.path.isdir(str(value)) and definition.behavior() == QgsProcessingParameterFile.Behavior.File:
            wanted = "a file, not a folder"
        else:
            wanted = "a file name ending in " + extension.group(1) if extension else ""
    else:
        return ""
    if not wanted:
        return ""
    default = definition.defaultValue()
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        default = f"{default:g}"
    said_default = f" (default {default})" if isinstance(default, str) and default else ""
    return f"{definition.name()} ({definition.description()}) is {value!r}; give {wanted}{said_default}."


INT_LIMIT = 2 ** 31 - 1  # parameterAsInt's C int


def _number_wanted(definition, value) -> str:
    """'a number from 0 to 1' where value is outside that (or no number at all; an Integer wants a whole one), else ''."""
    low, high = definition.minimum(), definition.maximum()
    whole = definition.dataType() == QgsProcessingParameterNumber.Type.Integer
    try:
        number = float(value)
    except ValueError:
        number = None
    # QGIS reads a whole number past a C int as 0: STRIDE=1e300 had run at the chunk size, BATCH_SIZE=1e300 at 0
    beyond_int = whole and number is not None and abs(number) > INT_LIMIT
    if number is not None and low <= number <= high and (not whole or number.is_integer()) and not beyond_int:
        return ""
    if beyond_int:
        low, high = max(low, -INT_LIMIT), min(high, INT_LIMIT)
    bounds = [f"from {low:g}" if low > -1e300 else "", (f"to {high:.0f}" if whole else f"to {high:g}") if high < 1e300 else ""]
    return (("a whole number " if whole else "a number ") + " ".join(b for b in bounds if b)).strip()


class HiriseIceAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set NAME, DISPLAY_NAME, GROUP, GROUP_ID and write the usual methods.

    Each subclass's processAlgorithm is wrapped on definition (_whole_and_said_once), so every algorithm of
    the provider fails with one message, and without its outputs half replaced, without each having to remember it.
    """

    NAME = ""
    DISPLAY_NAME = ""
    GROUP = ""
    GROUP_ID = ""
    # {output parameter: its fields (name, kind)}, for the formats that would cut their names
    OUTPUT_FIELDS: Dict[str, Sequence[Tuple[str, str]]] = {}
    # False where a failed run keeps what it finished (the survey's GeoPackage, resumed by the next run)
    KEPT_WHOLE = True
    STOPPED_LEAVES = "no output was written, and those there before are as they were"  # what a run stopped by a signal leaves

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "processAlgorithm" in cls.__dict__:
            cls.processAlgorithm = _whole_and_said_once(cls.__dict__["processAlgorithm"])

    def __init__(self):
        super().__init__()
        # (destination id, .qml) of outputs to style in postProcessAlgorithm.
        self._styled_outputs: List[Tuple[str, str]] = []
        # The layers of the context's store before this instance first checked its parameters, which loads its
        # inputs there: a failed run removes the rest (_whole_and_said_once).
        self._layers_before_run: Optional[Set[str]] = None

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("HiriseIce", text)

    def wrong_layer_type_message(self, parameters, context) -> str:
        """A layer of the wrong kind in a list of layers, or "": QGIS checks the paths given to a list, not the layers (a
        model, a batch row or processing.run hands it layers), and a vector layer among the rasters ended in a traceback."""
        for definition in self.parameterDefinitions():
            if not isinstance(definition, LayerListParameter) or parameters.get(definition.name()) is None:
                continue
            wants_raster = layer_kind(definition) == "raster"
            for layer in self.parameterAsLayerList(parameters, definition.name(), context):
                if isinstance(layer, QgsRasterLayer) != wants_raster or not isinstance(layer, (QgsRasterLayer, QgsVectorLayer)):
                    wanted, given = ("raster", "vector") if wants_raster else ("polygon", "raster")
                    return f"{definition.name()} ({definition.description()}) takes {wanted} layers; '{layer.name()}' is a {given} layer. Give {wanted} layers."
        return ""

    def checkParameterValues(self, parameters, context):  # noqa: N802 (QGIS's names from here on)
        """checked_parameter_values, its message's bidirectional controls escaped (as the wrapper's, _whole_and_said_once)."""
        accepted, message = self.checked_parameter_values(parameters, context)
        return accepted, message.translate(protocol.BIDI_CONTROLS)

    def checked_parameter_values(self, parameters, context) -> Tuple[bool, str]:
        """A name the algorithm does not have stops the run (unknown_parameter_message), and so does a
        value outside what the parameter takes, in words that say what it takes (value_message). A layer path
        that cannot be loaded is said to be missing, a folder, or not a raster or polygon layer
        (unloadable_layer_message) before QGIS tries: QGIS says "not found" or "Incorrect
        parameter value" of all of them, and prints a mesh driver's complaint. Last, no output may
        replace a file the run reads (check_no_input_replaced) or another output (check_outputs_apart), no layer may go to a format of
        Earth coordinates only (check_vector_formats), and every file output must be writable
        (destinations.check_writable), so that no run works for minutes and then fails to write."""
        if self._layers_before_run is None:
            self._layers_before_run = set(context.temporaryLayerStore().mapLayers())
        parameters = self.as_meant(parameters)
        unknown = self.unknown_parameter_message(parameters)
        if unknown:
            return False, unknown
        for definition in self.parameterDefinitions():
            message = value_message(definition, parameters.get(definition.name()), context)
            if message:
                return False, message
        for definition in self.parameterDefinitions():
            kind = layer_kind(definition)
            for value in layer_paths(parameters.get(definition.name())) if kind else []:
                message = unloadable_layer_message(value, kind, context)
                if message:
                    return False, message
        accepted, message = super().checkParameterValues(parameters, context)
        if not accepted:
            return accepted, message
        message = self.wrong_layer_type_message(parameters, context)
        if message:
            return False, message
        try:
            self.check_temporary_files_have_a_folder(parameters)
            self.check_no_input_replaced(parameters, context)
            check_outputs_apart(list(self.written_destinations(parameters)))
            check_styles_apart(self.styled_destinations(parameters))
            self.check_vector_formats(parameters)
            for destination, vector in self.file_destinations(parameters):
                check_writable(destination)
                if vector:
                    check_layer_name(destination)
                    check_not_into_a_survey(destination)
        except QgsProcessingException as exc:
            return False, str(exc)
        return True, ""

    def as_meant(self, parameters) -> Dict:
        """The parameters as the user meant them, which QGIS 3.22 would misread: 'a.tif;b.tif' given to a
        multiple-layer parameter is the list it means (qgis_process hands RASTERS=a.tif;b.tif over as one
        string, which QGIS reads as a single, missing, layer), and an option's number given to an option
        list of names is that name (qgis_process's help offers "CATEGORY_RULE=1", which QGIS refuses, and
        parameterAsEnumString would read as the default). processAlgorithm calls it too (QGIS hands it the
        parameters as they were given)."""
        meant = dict(parameters)
        for definition in self.parameterDefinitions():
            value = meant.get(definition.name())
            if isinstance(definition, QgsProcessingParameterMultipleLayers) and isinstance(value, str) and ";" in value \
                    and not os.path.exists(source_path(value)):  # a file whose own name holds a ';' is one layer
                meant[definition.name()] = [part.strip() for part in value.split(";") if part.strip()]
            elif isinstance(definition, QgsProcessingParameterBoolean) and isinstance(value, str) and value.strip().lower() in BOOLEAN_WORDS:
                meant[definition.name()] = BOOLEAN_WORDS[value.strip().lower()]  # QGIS reads any word but 0 and false as true: TTA=no ran with it
            elif isinstance(definition, QgsProcessingParameterEnum) and definition.usesStaticStrings() and not isinstance(value, bool) \
                    and str(value).strip().isdigit() and int(str(value).strip()) < len(definition.options()) and value not in definition.options():
                meant[definition.name()] = definition.options()[int(str(value).strip())]
        return meant

    def check_temporary_files_have_a_folder(self, parameters) -> None:
        """A report or raster left temporary goes to QGIS's temporary folder: where it could make none, they were refused as in a
        missing folder '/<id>' that no user can create, TMPDIR unnamed."""
        for definition in self.destinationParameterDefinitions():
            value = parameters.get(definition.name())
            if isinstance(value, QgsProcessingOutputLayerDefinition):
                value = value.sink.staticValue()
            if value == QgsProcessing.TEMPORARY_OUTPUT and definition.type() not in ("sink", "vectorDestination"):  # layers go to memory
                processing_temp_folder()

    def check_no_input_replaced(self, parameters, context) -> None:
        """No output may be named on a file this run reads (destinations.check_not_an_input): the
        user's image, labels or model would be lost, and QGIS checks only that a value is a path.
        The inputs' sources are looked up only where an output's file exists already (a survey's
        hundreds of images are not opened again for a new GeoPackage)."""
        existing = [destination for destination, _vector in self.file_destinations(parameters) if destination.existed]
        read = self.read_files(parameters, context) if existing else []
        for destination in existing:
            check_not_an_input(destination, read)

    def file_destinations(self, parameters) -> Iterator[Tuple[FileDestination, bool]]:
        """(where on disk, whether a vector layer) of each output given as a file."""
        for definition in self.destinationParameterDefinitions():
            value = parameters.get(definition.name())
            if isinstance(value, QgsProcessingOutputLayerDefinition):
                value = value.sink.staticValue()
            if isinstance(value, str) and definition.type() != "folderDestination":
                vector = definition.type() in ("sink", "vectorDestination")
                destination = file_destination(definition.name(), value, vector=vector)
                if destination is not None:
                    yield destination, vector

    def styled_destinations(self, parameters) -> List[FileDestination]:
        """The file outputs that get a style: layers with geometry, and rasters."""
        return [destination for destination, vector in self.file_destinations(parameters)
                if self.parameterDefinition(destination.parameter).type() == "rasterDestination" or (vector and self.has_geometry(destination))]

    def has_geometry(self, destination: FileDestination) -> bool:
        """Whether a layer output holds geometry (a table of fields only, train's history, may go to any format)."""
        return self.parameterDefinition(destination.parameter).dataType() != QgsProcessing.SourceType.TypeVector

    def sink_destination(self, parameters, name, context) -> str:
        """Where the layer output `name` will be written, asked before the worker runs without having
        it loaded on completion: for a temporary output QGIS schedules 'memory:<its description>',
        which no layer answers, and the dialog ended every default run with "The following layers
        were not correctly generated". parameterAsSink schedules the layer it creates."""
        scheduled = context.layersToLoadOnCompletion()
        try:
            return self.parameterAsOutputLayer(parameters, name, context)
        finally:
            context.setLayersToLoadOnCompletion(scheduled)

    def written_destinations(self, parameters) -> Iterator[Tuple[FileDestination, bool]]:
        """file_destinations as the algorithm will write them, where it renames one (train's OUTPUT_MODEL)."""
        return self.file_destinations(parameters)

    def check_vector_formats(self, parameters) -> None:
        """No layer of Mars into a format that loses its place (destinations.check_holds_mars); a table without geometry may go anywhere."""
        for destination, vector in self.file_destinations(parameters):
            if vector and (self.has_geometry(destination) or os.path.splitext(destination.path)[1].lower() in FORMATS_WITHOUT_TABLES):
                check_holds_mars(destination)

    def warn_of_what_formats_drop(self, parameters, feedback) -> None:
        """A warning for each layer output whose format cuts the names of fields the plugin reads back (OUTPUT_FIELDS), or drops its geometry."""
        for destination, vector in self.file_destinations(parameters):
            if not vector:
                continue
            warnings = [cut_field_names_warning(destination, [name for name, _kind in self.OUTPUT_FIELDS.get(destination.parameter, ())])]
            if self.has_geometry(destination):
                warnings.append(without_geometry_warning(destination))
            for warning in filter(None, warnings):
                feedback.pushWarning(warning)

    def read_files(self, parameters, context) -> List[Tuple[str, str, str]]:
        """(parameter, file, layer name) of each file the run reads: its layers' sources and its files."""
        read = []
        for definition in self.parameterDefinitions():
            name, kind = definition.name(), layer_kind(definition)
            if definition.isDestination() or parameters.get(name) in (None, ""):
                continue
            if isinstance(definition, QgsProcessingParameterFile):
                read.append((name, self.parameterAsFile(parameters, name, context), ""))
            elif kind:
                with gdal_without_pam(), gdal_errors_unprinted():
                    if isinstance(definition, QgsProcessingParameterMultipleLayers):
                        layers = self.parameterAsLayerList(parameters, name, context)
                    elif kind == "raster":
                        layers = [self.parameterAsRasterLayer(parameters, name, context)]
                    else:
                        layers = [self.parameterAsVectorLayer(parameters, name, context)]
                for layer in filter(None, layers):
                    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
                    read.append((name, parts.get("path", ""), parts.get("layerName", "")))
        return read

    def createInstance(self):  # noqa: N802
        return type(self)()

    def unknown_parameter_message(self, parameters) -> str:
        """qgis_process and processing.run pass over a name the algorithm does not have, so a
        misspelt optional output (PROBABILITY for PROBABILITY_RASTER) would silently not be written:
        an overnight batch must stop at once instead."""
        names = [definition.name() for definition in self.parameterDefinitions()]
        for given in parameters:
            if given not in names:
                close = difflib.get_close_matches(str(given).upper(), names, n=1, cutoff=0.5)
                hint = f" Did you mean {close[0]}?" if close else ""
                return f"{self.id()} has no parameter {given}.{hint} 'qgis_process help {self.id()}' lists its parameters."
        return ""

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr(self.GROUP)

    def groupId(self) -> str:
        return self.GROUP_ID

    def icon(self) -> QIcon:
        return QIcon(icon_path("hiriseice.svg"))

    def svgIconPath(self) -> str:
        return icon_path("hiriseice.svg")

    # --- helpers for subclasses ---------------------------------------------------------------

    def raster_layer(self, parameters, name: str, context) -> QgsRasterLayer:
        with gdal_without_pam(), gdal_errors_unprinted():
            layer = self.parameterAsRasterLayer(parameters, name, context)
        if layer is None:
            raise QgsProcessingException(unloadable_layer_message(parameters.get(name), "raster", context) or self.invalidRasterError(parameters, name))
        return layer

    def style_output(self, context, destination: str, qml: str) -> None:
        """Style `destination` in the GUI once loaded, and store the style with it after the run."""
        if destination:
            styling.set_post_processor(context, destination, qml)
            self._styled_outputs.append((destination, qml))

    def postProcessAlgorithm(self, context, feedback):
        for destination, qml in self._styled_outputs:
            styling.style_output(destination, qml, context, feedback)
        # An empty map keeps processAlgorithm's results.
        return {}
