"""What the HiRISE Ice Patches algorithms share: translation, icon, instances, styled outputs."""

from typing import List, Tuple

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from .engine import icon_path

try:
    from ..plugin import styling
except ImportError:  # processing_provider imported as a top-level package
    from plugin import styling


class HiriseIceAlgorithm(QgsProcessingAlgorithm):
    """Base class: subclasses set NAME, DISPLAY_NAME, GROUP, GROUP_ID and write the usual methods."""

    NAME = ""
    DISPLAY_NAME = ""
    GROUP = ""
    GROUP_ID = ""

    def __init__(self):
        super().__init__()
        # (destination id, .qml) of outputs to style in postProcessAlgorithm.
        self._styled_outputs: List[Tuple[str, str]] = []

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("HiriseIce", text)

    def createInstance(self):  # noqa: N802 (QGIS's names from here on)
        return type(self)()

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
