"""Plugin entry point: registers the Processing provider.

The provider is registered in :meth:`initProcessing` (which qgis_process calls
without a GUI) and removed in :meth:`unload`. Nothing touches ``iface``
outside :meth:`initGui`.
"""

from qgis.core import QgsApplication


class AnomalyDetectorPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider = None

    def initProcessing(self):  # noqa: N802 (QGIS API name)
        from .provider import AnomalyProvider
        if self.provider is None:
            self.provider = AnomalyProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802 (QGIS API name)
        self.initProcessing()

    def unload(self):
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
