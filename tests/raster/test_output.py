"""Outputs written completely or not at all; output problems are not input problems."""

import os

import pytest

from anomaly_detector.model.raster.errors import (AnomalyError, ParameterError, RasterInputError,
                                                  RasterOutputError)
from anomaly_detector.model.raster.files import check_score_path
from anomaly_detector.model.raster.output import atomic_output
from anomaly_detector.model.vector.output import vector_driver


def test_a_complete_output_replaces_the_previous_one_and_its_statistics(tmp_path):
    dst = tmp_path / "out.csv"
    dst.write_text("old")
    (tmp_path / "out.csv.aux.xml").write_text("<stats of the old output/>")
    with atomic_output(str(dst)) as partial:
        assert os.path.dirname(partial) == str(tmp_path) and partial != str(dst)
        with open(partial, "w") as handle:
            handle.write("new")
        assert dst.read_text() == "old"  # not replaced before the block ends
    assert sorted(os.listdir(tmp_path)) == ["out.csv"] and dst.read_text() == "new"


def test_a_failed_output_leaves_the_previous_one_and_no_partial_file(tmp_path):
    dst = tmp_path / "out.tif"
    dst.write_text("old")
    with pytest.raises(RuntimeError, match="write failed"):
        with atomic_output(str(dst)) as partial:
            with open(partial, "w") as handle:
                handle.write("half")
            raise RuntimeError("write failed")
    assert sorted(os.listdir(tmp_path)) == ["out.tif"] and dst.read_text() == "old"


def test_an_output_of_several_files_moves_them_all_after_removing_the_previous_one(tmp_path):
    dst = tmp_path / "out.shp"
    dst.write_text("old")
    (tmp_path / "out.dbf").write_text("old")
    removed = []

    def remove_previous(path):
        removed.append(path)
        for name in ("out.shp", "out.dbf"):
            os.remove(tmp_path / name)

    with atomic_output(str(dst), several_files=True, remove_previous=remove_previous) as partial:
        assert os.path.basename(partial) == "out.shp"
        for ext in ("shp", "shx"):
            with open(partial[:-3] + ext, "w") as handle:
                handle.write("new")
        assert (tmp_path / "out.dbf").exists()  # still the previous output
    assert removed == [str(dst)]
    assert sorted(os.listdir(tmp_path)) == ["out.shp", "out.shx"]
    assert dst.read_text() == "new"


def test_output_and_parameter_problems_are_not_input_problems(tmp_path):
    for error in (RasterOutputError, ParameterError):
        assert issubclass(error, AnomalyError) and not issubclass(error, RasterInputError)
    with pytest.raises(RasterOutputError, match="written as GeoTIFF"):
        check_score_path(str(tmp_path / "score.png"))
    with pytest.raises(RasterOutputError, match="not a vector format"):
        vector_driver(str(tmp_path / "polygons.tif"))
