"""lorascope/tables.py: the tables' columns, one rule for their values, and the CSV writer pandas would be."""

import numpy as np
import pandas as pd

from lorascope.results import Results
from lorascope.tables import modules_frame, spectra_series, vectors_frame


def test_spectra_are_a_series_of_arrays_even_of_equal_length():
    s = spectra_series({"a": np.ones(2), "b": np.zeros(2)})
    assert list(s.index) == ["a", "b"] and s["a"].shape == (2,) and s.dtype == object


def hostile_rows():
    """Rows as analyses and users make them: missing and NaN values, pd.NA, an added_rows column only some
    rows have, quotes, commas and newlines in names, extreme floats, numpy scalars."""
    return [
        {
            "name": 'model.layers.0.q,"odd"',
            "layer": np.int64(0),
            "module": "q",
            "rows": 4,
            "cols": 3,
            "fro_norm": np.float64(1e-300),
            "spectral_norm": 1.7976931348623157e308,
            "scale": 0.1,
            "rank_90": 1,
            "rank_beyond_k": True,
            "numerical_rank": pd.NA,
            "added_rows": 2,
        },
        {
            "name": "lm_head\nsecond line",
            "layer": None,
            "module": "lm_head",
            "rows": 7,
            "cols": 2,
            "fro_norm": float("nan"),
            "stable_rank": 1 / 3,
            "relative_update": float("inf"),
            "entropy_rank": "not a number",
        },
    ]


def test_results_written_from_rows_are_the_bytes_pandas_writes_from_the_frame(tmp_path):
    """Results.write needs no pandas: its CSV of plain rows equals pandas' to_csv of the same table."""
    rows = hostile_rows()
    summary = {"kind": "adapter", "inputs": [], "options": {}}
    vectors = [{"name": "model.norm", "layer": None, "size": 3, "fro_norm": 0.5}]
    spectra = {r["name"]: np.array([1.0]) for r in rows}
    Results(rows, spectra, summary, vectors).write(tmp_path / "rows")
    frame = modules_frame(rows)
    frame.to_csv(tmp_path / "pandas.csv", index=False)
    vectors_frame(vectors).to_csv(tmp_path / "pandas_vectors.csv", index=False)
    assert (tmp_path / "rows" / "modules.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    assert (tmp_path / "rows" / "vectors.csv").read_bytes() == (tmp_path / "pandas_vectors.csv").read_bytes()
    Results(frame, spectra, summary, vectors_frame(vectors)).write(tmp_path / "frame")
    for name in ("modules.csv", "vectors.csv", "singular_values.safetensors"):
        assert (tmp_path / "rows" / name).read_bytes() == (tmp_path / "frame" / name).read_bytes()
    back = pd.read_csv(tmp_path / "rows" / "modules.csv")
    assert back["name"].tolist() == [r["name"] for r in rows]
    assert back["added_rows"].tolist()[0] == 2 and pd.isna(back["added_rows"].tolist()[1])


def test_rows_become_dataframes_only_when_read():
    res = Results(hostile_rows(), {"a": [2.0, 1.0]}, {"kind": "adapter"}, [])
    assert isinstance(res.parts()[0], list) and isinstance(res.parts()[1], dict)
    assert str(res.modules["added_rows"].dtype) == "Int64" and res.modules["rank_beyond_k"].tolist() == [
        True,
        False,
    ]
    assert np.isnan(res.modules["entropy_rank"].iloc[1])  # not a number -> NaN, as pandas.to_numeric coerces
    assert list(res.spectra.index) == ["a"] and res.spectrum("a").tolist() == [2.0, 1.0]
    assert list(res.vectors.columns)[:2] == ["name", "layer"] and len(res.vectors) == 0
    assert "modules=2" in repr(res)
