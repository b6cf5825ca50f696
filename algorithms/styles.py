"""Names and styles of the layers that the algorithms add to the project.

Styles are applied by :class:`OutputStyler`, a
``QgsProcessingLayerPostProcessorInterface`` registered on the output's
``QgsProcessingContext.LayerDetails``: QGIS runs it after loading the layer,
whether the algorithm ran from its dialog, in batch mode, in a model or
through ``processing.runAndLoadResults``. Nothing is done when the output is
not loaded (``processing.run``, ``qgis_process``).

* Score rasters: a ramp that is transparent at ordinary scores and goes from
  translucent red to opaque yellow over the most anomalous ones, stretched
  from the 95th percentile of the valid scores to their maximum.
* Anomaly polygons: cyan outlines without fill, labelled with their rank.
"""

import collections
import math

from qgis.core import (QgsColorRampShader, QgsFillSymbol, QgsPalLayerSettings,
                       QgsProcessingLayerPostProcessorInterface, QgsRasterLayer, QgsRasterShader,
                       QgsSingleBandPseudoColorRenderer, QgsSingleSymbolRenderer,
                       QgsTextBufferSettings, QgsTextFormat, QgsVectorLayer,
                       QgsVectorLayerSimpleLabeling)
from qgis.PyQt.QtGui import QColor

from ..model.vector.threshold import ScoreStream, threshold_and_summary
from .params import raster_pixels

SCORE_SUFFIX = "anomaly score"
POLYGONS_SUFFIX = "anomalies"
STRETCH_PERCENTILE = 95.0
"""Scores below this percentile of the valid scores are fully transparent."""
STRETCH_FRACTION = 1.0 - STRETCH_PERCENTILE / 100.0  # the top fraction it leaves

SCORE_COLORS = (QColor(255, 0, 0, 0), QColor(255, 60, 0, 150), QColor(255, 160, 0, 220),
                QColor(255, 255, 0, 255))
"""Ramp of the score style, from the stretch start to the maximum (RGBA)."""

OUTLINE_COLOR = QColor(0, 255, 255)
"""Outline and label colour of the anomaly polygons."""

# Post-processors must outlive the algorithm instance that created them (QGIS
# runs them after the algorithm finished, and a model or the task manager may
# already have deleted that instance): keep the most recent ones here.
_ALIVE = collections.deque(maxlen=256)


def layer_name(input_name, suffix):
    """'<input> - <suffix>', e.g. 'scene - anomaly score'."""
    input_name = (input_name or "").strip()
    # 'scene - anomaly score' -> 'scene - anomalies'
    for known in (SCORE_SUFFIX, "local RX score", "RX score", "local contrast"):
        if input_name.endswith(f" - {known}"):
            input_name = input_name[:-len(known) - 3]
    return f"{input_name} - {suffix}" if input_name else suffix


def stretch_stream(raster):
    """A stream that gathers :func:`score_stretch`'s figures from the scores of ``raster``
    (or of a window of it) while they are written (see ``model.vector.threshold.observer``)."""
    return ScoreStream("top_fraction", STRETCH_FRACTION, raster_pixels(raster))


def score_stretch(path, is_cancelled=None, stream=None):
    """``(low, high)``: the :data:`STRETCH_PERCENTILE` of the valid scores and their
    maximum, from a pass over ``path`` or from the :func:`stretch_stream` that saw them
    written."""
    try:
        low, summary = threshold_and_summary(path, "top_fraction", STRETCH_FRACTION,
                                             is_cancelled=is_cancelled, stream=stream)
        high = summary.high
    except ValueError:  # no valid score: any ramp will do
        return 0.0, 1.0
    if not (math.isfinite(low) and math.isfinite(high)):
        return 0.0, 1.0
    if high <= low:
        high = low + max(abs(low) * 1e-6, 1e-6)
    return float(low), float(high)


def style_score_layer(layer, low, high):
    """Pseudocolor ramp on band 1: transparent below ``low``, bright yellow at ``high``."""
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        return False
    ramp = QgsColorRampShader(low, high)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    n = len(SCORE_COLORS) - 1
    items = []
    for i, color in enumerate(SCORE_COLORS):
        value = low + (high - low) * i / n
        items.append(QgsColorRampShader.ColorRampItem(value, QColor(color), f"{value:.4g}"))
    ramp.setColorRampItemList(items)
    ramp.setClip(False)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(low)
    renderer.setClassificationMax(high)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return True


def style_polygon_layer(layer):
    """Cyan outlines without fill, labelled with the ``rank`` field."""
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        return False
    symbol = QgsFillSymbol.createSimple({
        "style": "no", "color": "0,0,0,0", "outline_style": "solid",
        "outline_color": ",".join(str(c) for c in OUTLINE_COLOR.getRgb()),
        "outline_width": "0.6", "outline_width_unit": "MM"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    if layer.fields().indexOf("rank") >= 0:
        settings = QgsPalLayerSettings()
        settings.fieldName = "rank"
        settings.placement = QgsPalLayerSettings.AroundPoint
        text = QgsTextFormat()
        text.setSize(10)
        text.setColor(OUTLINE_COLOR)
        buffer = QgsTextBufferSettings()
        buffer.setEnabled(True)
        buffer.setSize(1.0)
        buffer.setColor(QColor(0, 0, 0))
        text.setBuffer(buffer)
        settings.setFormat(text)
        layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
        layer.setLabelsEnabled(True)
    layer.triggerRepaint()
    return True


class OutputStyler(QgsProcessingLayerPostProcessorInterface):
    """Names and styles one output layer once QGIS has loaded it."""

    def __init__(self, kind, name=None, low=None, high=None, below=None):
        super().__init__()
        self.kind, self.name, self.low, self.high, self.below = kind, name, low, high, below

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS API name)
        if layer is None:
            return
        if self.name:
            layer.setName(self.name)
        if self.kind == "score":
            style_score_layer(layer, self.low, self.high)
        elif self.kind == "polygons":
            style_polygon_layer(layer)
        try:
            _arrange(layer, context, self.kind == "polygons", self.below)
        except Exception:  # noqa: BLE001 - layer order is cosmetic, never fail a run for it
            pass


def _arrange(layer, context, on_top, below_name):
    """Polygons go to the top of their group; a score goes under its run's polygons."""
    project = context.project() if context is not None else None
    if project is None:
        from qgis.core import QgsProject
        project = QgsProject.instance()
    node = project.layerTreeRoot().findLayer(layer.id())
    if node is None or node.parent() is None:
        return
    parent = node.parent()
    siblings = parent.children()
    target = None
    if on_top:
        target = 0
    elif below_name:
        for i, sibling in enumerate(siblings):
            if sibling is not node and getattr(sibling, "name", lambda: None)() == below_name:
                target = i + 1
                break
    if target is None:
        return
    current = siblings.index(node)
    if current == target:
        return
    clone = node.clone()
    parent.insertChildNode(target, clone)
    parent.removeChildNode(node)


def register_output(context, destination, kind, name, **kwargs):
    """Name and style ``destination`` if QGIS will load it; returns the post-processor or None."""
    if not destination or not context.willLoadLayerOnCompletion(destination):
        return None
    details = context.layerToLoadOnCompletionDetails(destination)
    styler = OutputStyler(kind, name, **kwargs)
    _ALIVE.append(styler)
    if name:
        details.name = name
        if hasattr(details, "forceName"):
            details.forceName = True
    details.setPostProcessor(styler)
    return styler
