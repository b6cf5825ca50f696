"""Triage logic without widgets: anomaly candidates in rank order, the analyst's
decision in a ``review`` text field of the layer's data source, the CSV export.

A decision is written straight to the data provider (not into an edit buffer), so it
is in the file at once: it survives the project, exports and models that read the
layer. Values are :data:`STATUSES` or empty (NULL, not reviewed yet).
"""

import csv
import math
import os
from dataclasses import dataclass
from typing import Dict, List

from qgis.core import (QgsFeatureRequest, QgsField, QgsRectangle, QgsVectorDataProvider,
                       QgsVectorLayer, QgsWkbTypes)
from qgis.PyQt.QtCore import QVariant

from ..model.raster.output import atomic_output, output_error

REVIEW_FIELD = "review"
STATUSES = ("confirmed", "dismissed", "unsure")
CSV_FIELDS = ("rank", "score_max", "score_mean", "lon", "lat", "area_m2", "top_share", "pixels",
              "peak_x", "peak_y", REVIEW_FIELD)
"""Columns of the CSV export, in order (those the layer has; ``review`` always)."""

CONTEXT = 3.0
"""The view around a candidate is this many times its bounding box..."""
MIN_VIEW_PIXELS = 48
"""...and at least this many raster pixels wide (from the ``area`` / ``pixels`` fields)."""


class TriageError(ValueError):
    """A decision or an export that cannot be done; the message says what to do."""


@dataclass
class Candidate:
    """One anomaly polygon: its feature id and its :data:`CSV_FIELDS` values (None = empty)."""
    fid: int
    values: Dict[str, object]

    @property
    def review(self) -> str:
        return self.values.get(REVIEW_FIELD) or ""


def _plain(value):
    """A Python value for an attribute: None for NULL."""
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    return value


def is_anomaly_layer(layer) -> bool:
    """A polygon layer with a ``rank`` field, as anomaly:detect / anomaly:polygonize write."""
    return (isinstance(layer, QgsVectorLayer) and layer.isValid()
            and layer.geometryType() == QgsWkbTypes.PolygonGeometry
            and layer.fields().indexOf("rank") >= 0)


def candidates(layer: QgsVectorLayer) -> List[Candidate]:
    """The layer's features by rank (1 first; features without a rank last, by id)."""
    names = [n for n in CSV_FIELDS if layer.fields().indexOf(n) >= 0]
    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry)
    request.setSubsetOfAttributes(names, layer.fields())
    found = [Candidate(f.id(), {n: _plain(f[n]) for n in names})
             for f in layer.getFeatures(request)]
    found.sort(key=lambda c: (c.values.get("rank") is None, c.values.get("rank") or 0, c.fid))
    return found


def summary(found: List[Candidate]) -> str:
    """E.g. '10 candidates: 2 confirmed, 1 dismissed, 0 unsure, 7 to review'."""
    counts = {s: sum(c.review == s for c in found) for s in STATUSES}
    done = ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    return f"{len(found)} candidates: {done}, {len(found) - sum(counts.values())} to review"


def _refuse_unwritable(layer: QgsVectorLayer, adding_field: bool) -> None:
    name = layer.name()
    if layer.readOnly():
        raise TriageError(
            f"The layer '{name}' is read-only in this project: untick its Read-only box under "
            "Project ▸ Properties ▸ Data Sources, or triage a copy.")
    if layer.isEditable():
        raise TriageError(
            f"The layer '{name}' is in editing mode: save or discard its edits (Toggle "
            "Editing) first, then mark the candidate again.")
    needed = QgsVectorDataProvider.ChangeAttributeValues
    if adding_field:
        needed |= QgsVectorDataProvider.AddAttributes
    if (layer.dataProvider().capabilities() & needed) != needed:
        raise TriageError(
            f"The layer '{name}' cannot store reviews: its data source "
            f"'{layer.source()}' is read-only. Save it as a GeoPackage (right-click ▸ Export "
            "▸ Save Features As…) and triage the copy.")


def ensure_review_field(layer: QgsVectorLayer) -> int:
    """Index of the ``review`` field, added to the data source when missing."""
    index = layer.fields().indexOf(REVIEW_FIELD)
    _refuse_unwritable(layer, adding_field=index < 0)
    if index >= 0:
        if layer.fields().at(index).type() != QVariant.String:
            raise TriageError(
                f"The layer '{layer.name()}' has a field '{REVIEW_FIELD}' that is not text: "
                "rename or delete that field, then mark again.")
        return index
    if not layer.dataProvider().addAttributes([QgsField(REVIEW_FIELD, QVariant.String, len=16)]):
        raise TriageError(_write_failure(layer, f"the field '{REVIEW_FIELD}' could not be added"))
    layer.updateFields()
    return layer.fields().indexOf(REVIEW_FIELD)


def _write_failure(layer: QgsVectorLayer, what: str) -> str:
    errors = "; ".join(layer.dataProvider().errors()[-2:]) or "no detail"
    return (f"In '{layer.source()}' {what} ({errors}). Check that the file is writable and "
            "not open in another program, then mark again.")


def set_review(layer: QgsVectorLayer, fid: int, status: str) -> None:
    """Write ``status`` (one of :data:`STATUSES`, or '' to clear) into feature ``fid``."""
    if status and status not in STATUSES:
        raise TriageError(f"Unknown review '{status}': use one of {', '.join(STATUSES)} or ''.")
    index = ensure_review_field(layer)
    value = status if status else QVariant()
    if not layer.dataProvider().changeAttributeValues({fid: {index: value}}):
        raise TriageError(_write_failure(layer, f"the review of feature {fid} was not written"))
    layer.triggerRepaint()


def view_extent(layer: QgsVectorLayer, fid: int) -> QgsRectangle:
    """The square to show around candidate ``fid`` (layer CRS): :data:`CONTEXT` times its
    bounding box, at least :data:`MIN_VIEW_PIXELS` pixels of the scored raster."""
    feature = layer.getFeature(fid)
    box = feature.geometry().boundingBox()
    side = CONTEXT * max(box.width(), box.height())
    names = layer.fields().names()
    if "area" in names and "pixels" in names:
        area, pixels = _plain(feature["area"]), _plain(feature["pixels"])
        if area and pixels and area > 0 and pixels > 0:
            side = max(side, MIN_VIEW_PIXELS * math.sqrt(area / pixels))
    side = side or 1.0  # a point-like geometry without size fields
    center = box.center()
    half = side / 2
    return QgsRectangle(center.x() - half, center.y() - half, center.x() + half, center.y() + half)


def export_csv(layer: QgsVectorLayer, path: str, *, skip_dismissed: bool = False) -> int:
    """Write the candidates in rank order to the CSV file ``path`` (the layer's
    :data:`CSV_FIELDS`; numbers as stored); return the number of rows. The file is
    replaced only when complete."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise TriageError(f"The folder '{folder}' does not exist. Choose an existing folder.")
    found = [c for c in candidates(layer) if not (skip_dismissed and c.review == "dismissed")]
    names = [n for n in CSV_FIELDS if n == REVIEW_FIELD or layer.fields().indexOf(n) >= 0]
    try:
        with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            writer.writerows(["" if c.values.get(n) is None else c.values[n] for n in names]
                             for c in found)  # floats in full (round-trip) precision
    except OSError as error:
        raise output_error(path, error.strerror or str(error)) from error
    return len(found)
