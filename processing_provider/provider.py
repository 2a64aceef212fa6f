"""The Processing provider 'hiriseice' (HiRISE Ice Patches)."""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .chunk_algorithm import ChunkAlgorithm
from .detect_algorithm import DetectAlgorithm
from .download_algorithm import DownloadAlgorithm
from .engine import ENGINE_VERSION, icon_path
from .find_algorithm import FindAlgorithm
from .survey_algorithm import SurveyAlgorithm
from .train_algorithm import TrainAlgorithm
from .worker import close_warm_workers


class IcePatchesProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "hiriseice"

    def name(self) -> str:
        return "HiRISE Ice Patches"

    def longName(self) -> str:
        return f"HiRISE Ice Patches {ENGINE_VERSION}"

    def icon(self) -> QIcon:
        return QIcon(icon_path("hiriseice.svg"))

    def svgIconPath(self) -> str:
        return icon_path("hiriseice.svg")

    def versionInfo(self) -> str:
        return ENGINE_VERSION

    def unload(self):
        # a reloaded plugin must not keep running the old engine code
        close_warm_workers("the HiRISE Ice Patches plugin was unloaded (reloaded, updated, disabled or uninstalled)")

    def loadAlgorithms(self):  # noqa: N802 (QGIS's name)
        for algorithm in (DetectAlgorithm(), TrainAlgorithm(), ChunkAlgorithm(), FindAlgorithm(), DownloadAlgorithm(), SurveyAlgorithm()):
            self.addAlgorithm(algorithm)
