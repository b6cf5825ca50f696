"""Outputs pinned on four real rasters: the demo sample and small cut-outs of three
labelled scenes (hyperspectral, infrared, SAR; see tests/data/golden/README.md).

The detector's scores, RX's scores and the first ranked polygons must stay what the
reference file says: a change of weights, network, evidence filters, reduction, tiling,
statistics or polygon ranking that moves any of them shows here. Regenerate the reference
only together with new weights (and their model card) or a deliberate change of method:

    python tests/test_golden.py --regenerate
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr

from anomaly_detector.model.nn.detector import detect_raster
from anomaly_detector.model.vector.polygons import polygonize_scores
from anomaly_detector.model.classic.rx import rx_score_raster

REPO = Path(__file__).resolve().parent.parent
GOLDEN_DIR = Path(__file__).resolve().parent / "data" / "golden"
REFERENCE = GOLDEN_DIR / "reference.json"
RASTERS = {
    "demo": REPO / "resources" / "sample_thermal_baboons.tif",
    "hyperspectral": GOLDEN_DIR / "hyperspectral_abu-beach-4_bands1-97-step8.tif",
    "infrared": GOLDEN_DIR / "infrared_sirst_Misc_110.tif",
    "sar": GOLDEN_DIR / "sar_hrsid_P0001_crop440-160.tif",
}
SAMPLED_PIXELS = 25
FIRST_POLYGONS = 3
# float rounding differs a little between CPUs and thread counts, never by this much
SCORE_TOLERANCE = 1e-5


def _score_summary(scores: np.ndarray) -> dict:
    rng = np.random.default_rng(0)
    rows = rng.integers(0, scores.shape[0], SAMPLED_PIXELS)
    cols = rng.integers(0, scores.shape[1], SAMPLED_PIXELS)
    return {"mean": float(scores.mean()), "max": float(scores.max()),
            "argmax": [int(i) for i in np.unravel_index(np.argmax(scores), scores.shape)],
            "pixels": [[int(r), int(c), float(scores[r, c])] for r, c in zip(rows, cols)]}


def _first_polygons(path: Path) -> dict:
    source = ogr.Open(str(path))
    layer = source.GetLayer(0)
    features = sorted(layer, key=lambda f: f.GetField("rank"))
    first = [{"rank": f.GetField("rank"), "score_max": f.GetField("score_max"),
              "pixels": f.GetField("pixels"), "peak": [f.GetField("peak_x"), f.GetField("peak_y")]}
             for f in features[:FIRST_POLYGONS]]
    return {"count": len(features), "first": first}


def outputs(name: str, folder: Path) -> dict:
    """What the reference pins for one raster: detector and RX scores, detector polygons."""
    detector, rx, polygons = folder / f"{name}_detector.tif", folder / f"{name}_rx.tif", \
        folder / f"{name}.gpkg"
    detect_raster(str(RASTERS[name]), str(detector), device="cpu", precision="float32")
    rx_score_raster(str(RASTERS[name]), str(rx))
    polygonize_scores(str(detector), str(polygons))
    return {"detector": _score_summary(gdal.Open(str(detector)).ReadAsArray()),
            "rx": _score_summary(gdal.Open(str(rx)).ReadAsArray()),
            "polygons": _first_polygons(polygons)}


def _assert_scores(got: dict, expected: dict, scale: float) -> None:
    tolerance = SCORE_TOLERANCE * scale
    np.testing.assert_allclose([p[2] for p in got["pixels"]], [p[2] for p in expected["pixels"]],
                               atol=tolerance, rtol=SCORE_TOLERANCE)
    assert got["mean"] == pytest.approx(expected["mean"], abs=tolerance, rel=SCORE_TOLERANCE)
    assert got["max"] == pytest.approx(expected["max"], abs=tolerance, rel=SCORE_TOLERANCE)
    assert got["argmax"] == expected["argmax"]


@pytest.mark.parametrize("name", sorted(RASTERS))
def test_outputs_match_the_reference(name, tmp_path):
    expected = json.loads(REFERENCE.read_text())[name]
    got = outputs(name, tmp_path)
    _assert_scores(got["detector"], expected["detector"], 1.0)
    _assert_scores(got["rx"], expected["rx"], expected["rx"]["max"])
    assert got["polygons"]["count"] == expected["polygons"]["count"]
    for have, want in zip(got["polygons"]["first"], expected["polygons"]["first"]):
        assert (have["rank"], have["pixels"], have["peak"]) == \
            (want["rank"], want["pixels"], want["peak"])
        assert have["score_max"] == pytest.approx(want["score_max"], abs=SCORE_TOLERANCE)


if __name__ == "__main__" and sys.argv[1:] == ["--regenerate"]:
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        reference = {name: outputs(name, Path(folder)) for name in sorted(RASTERS)}
    REFERENCE.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
