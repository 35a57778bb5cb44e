"""Results.write wrote each cell of a column outside modules.csv's schema on its own, while pandas gives the
column one dtype: an integer column with a row lacking it was "1" and "" on disk but 1.0 in ``.modules``
(pandas' to_csv writes "1.0"), a column of ints and floats "1" beside "2.5", a float32 column
"0.10000000149011612" where pandas writes "0.1", a date "2020-01-01 00:00:00" where pandas writes
"2020-01-01", and NaT as the text "NaT" where pandas leaves the cell empty; the vectors table the same
(sizes, numpy float32 norms). A DataFrame the user built or edited was written cell by cell too. What is
written must be what ``to_csv`` writes of the table ``.modules`` / ``.vectors`` shows, and read back to it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lorascope.results import Results, load_results
from lorascope.tables import modules_frame, vectors_frame

ROW = {"name": "m.0.q", "layer": 0, "module": "q", "rows": 4, "cols": 3, "fro_norm": 1.5, "lora_rank": 2}


def rows_with(values):
    return [
        dict(ROW, name=f"m.{i}.q", extra=v) if v is not ... else dict(ROW, name=f"m.{i}.q")
        for i, v in enumerate(values)
    ]


CASES = {
    "int, missing": [1, ...],
    "int, None": [np.int64(3), None],
    "int, pd.NA": [pd.NA, 1],
    "int and float": [1, 2.5],
    "int and NaN": [1, float("nan")],
    "float32": [np.float32(0.1), np.float32(0.2)],
    "float16": [np.float16(0.1)],
    "date": [pd.Timestamp("2020-01-01")],
    "NaT": [pd.NaT, "x"],
    "bool, missing": [True, ...],
    "numpy bool": [np.bool_(True), np.bool_(False)],
    "text and float32": ["a", np.float32(0.1)],
    "huge int": [2**70],
    "list": [[1, 2]],
}


def test_rows_are_written_as_pandas_writes_their_frame_and_read_back(tmp_path):
    for i, (case, values) in enumerate(CASES.items()):
        rows = rows_with(values)
        spectra = {r["name"]: np.array([1.0]) for r in rows}
        vectors = [
            {"name": "m.norm", "layer": None, "size": np.int32(3), "fro_norm": np.float32(0.1)},
            {"name": "b"},
        ]
        res = Results(rows, spectra, {"kind": "adapter"}, vectors)
        res.save(tmp_path / f"{i}")
        expected = modules_frame(rows).to_csv(index=False)
        assert (tmp_path / f"{i}" / "modules.csv").read_text(encoding="utf-8") == expected, case
        expected_vectors = vectors_frame(vectors).to_csv(index=False)
        assert (tmp_path / f"{i}" / "vectors.csv").read_text(encoding="utf-8") == expected_vectors, case
        assert res.modules.to_csv(index=False) == expected, case  # what .modules shows is what was written
        load_results(tmp_path / f"{i}").save(tmp_path / f"{i}-again")
        for f in ("modules.csv", "vectors.csv"):
            assert (tmp_path / f"{i}" / f).read_bytes() == (tmp_path / f"{i}-again" / f).read_bytes(), case


def test_an_edited_frame_is_written_as_pandas_writes_it(tmp_path):
    res = Results([dict(ROW)], {"m.0.q": np.array([1.0])}, {"kind": "adapter"})
    frame = res.modules
    frame["fro_norm"] = frame["fro_norm"].astype(np.float32) / np.float32(15)
    frame["when"] = pd.to_datetime(["2024-05-01"])
    frame["note"] = pd.Categorical(["kept"])
    res.save(tmp_path / "r")
    assert (tmp_path / "r" / "modules.csv").read_text(encoding="utf-8") == frame.to_csv(index=False)
    back = load_results(tmp_path / "r")
    assert back.modules["fro_norm"].tolist() == [0.1] and back.modules["when"].tolist() == ["2024-05-01"]
    back.save(tmp_path / "again")
    assert (tmp_path / "r" / "modules.csv").read_bytes() == (tmp_path / "again" / "modules.csv").read_bytes()
