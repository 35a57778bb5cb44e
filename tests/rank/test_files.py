"""lorascope/rank/files.py: the files of sweep and selection folders, written and read back."""

import json

import numpy as np
import pandas as pd
import pytest

from lorascope.errors import LorascopeError
from lorascope.rank.files import FUNCTIONAL_CSV, SWEEP_JSON, clean_json, load_functional, write_tables


def test_tables_written_and_dropped(tmp_path):
    write_tables(tmp_path, {"a.csv": pd.DataFrame({"k": [1, 2]}), "b.csv": None})
    assert pd.read_csv(tmp_path / "a.csv")["k"].tolist() == [1, 2] and not (tmp_path / "b.csv").exists()
    (tmp_path / "b.csv").write_text("x\n")
    write_tables(tmp_path, {"b.csv": None})
    assert not (tmp_path / "b.csv").exists()


def test_nan_becomes_null_for_standard_json():
    assert clean_json({"a": float("nan"), "b": [1.0, float("inf")], "c": (2, "x")}) == {
        "a": None,
        "b": [1.0, None],
        "c": [2, "x"],
    }
    json.dumps(clean_json({"x": np.float64(3.0)}), allow_nan=False)


def test_functional_table_and_its_loss_metric(tmp_path):
    with pytest.raises(LorascopeError, match=f"holds no {FUNCTIONAL_CSV}"):
        load_functional(tmp_path)
    pd.DataFrame({"k": [1], "edit_loss": [0.5]}).to_csv(tmp_path / FUNCTIONAL_CSV, index=False)
    (tmp_path / SWEEP_JSON).write_text(json.dumps({"functional_pick": {"metric": "edit_loss"}}))
    table = load_functional(tmp_path)
    assert table.attrs["loss_metric"] == "edit_loss" and table["k"].tolist() == [1]
