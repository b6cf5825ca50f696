"""Processing provider ``anomaly`` ("Anomaly detection").

Never imports torch: the learned detector's algorithm imports it lazily when it
runs, so the provider (and the classic algorithms) load without it.
"""

import os

from qgis.core import QgsMessageLog, Qgis, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms.local import LocalContrastAlgorithm, LocalRxAlgorithm
from .algorithms.polygonize import PolygonizeAlgorithm
from .algorithms.rx import RxAlgorithm

ICON_PATH = os.path.join(os.path.dirname(__file__), "resources", "icon.svg")


class AnomalyProvider(QgsProcessingProvider):
    def id(self):
        return "anomaly"

    def name(self):
        return "Anomaly detection"

    def longName(self):  # noqa: N802
        return ("Anomaly detection (RX, local RX, local contrast, learned zero-shot detector, "
                "anomaly polygons)")

    def icon(self):
        return QIcon(ICON_PATH)

    def svgIconPath(self):  # noqa: N802
        return ICON_PATH

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(RxAlgorithm())
        self.addAlgorithm(LocalRxAlgorithm())
        self.addAlgorithm(LocalContrastAlgorithm())
        self.addAlgorithm(PolygonizeAlgorithm())
        try:
            from .algorithms.detect import DetectAlgorithm
        except ImportError as err:
            # keep the provider usable when the learned detector is unavailable
            QgsMessageLog.logMessage(
                f"anomaly:detect is not available: {err}", "Anomaly detection", Qgis.Warning)
        else:
            self.addAlgorithm(DetectAlgorithm())
