"""lorascope/results.py: the results schema — modules table, spectra, summary — written and read back."""

import json

import numpy as np
import pandas as pd
import pytest

from lorascope.errors import LorascopeError
from lorascope.results import (
    MODULE_COLUMNS,
    RESULTS_FILES,
    Results,
    is_results_folder,
    load_results,
    modules_frame,
    vectors_frame,
    versions,
    write_json,
)


def results():
    rows = [
        {
            "name": "model.layers.0.q",
            "layer": 0,
            "module": "q",
            "rows": 4,
            "cols": 3,
            "source": "peft",
            "method": "factored",
            "lora_rank": 2,
            "fro_norm": 5.0,
            "rank_90": 1,
            "extra": "kept",
        }
    ]
    spectra = {"model.layers.0.q": np.array([4.0, 3.0])}
    return Results(modules_frame(rows), spectra, {"kind": "adapter", "inputs": [], "options": {}})


def test_modules_frame_orders_the_schema_and_keeps_extra_columns():
    df = results().modules
    assert list(df.columns[: len(MODULE_COLUMNS)]) == MODULE_COLUMNS and df.columns[-1] == "extra"
    assert str(df["lora_rank"].dtype) == "Int64" and pd.isna(df["rank_95"].iloc[0])  # unknown, never 0
    assert df["rank_beyond_k"].tolist() == [False] and df["fro_norm"].dtype == np.float64


def test_save_and_load_round_trip(tmp_path):
    out = results().save(tmp_path / "run")
    assert is_results_folder(out) and all((out / f).is_file() for f in RESULTS_FILES)
    back = load_results(out)
    np.testing.assert_allclose(back.spectrum("model.layers.0.q"), [4.0, 3.0])  # float32 on disk, exact here
    assert back.summary["kind"] == "adapter" and back.path == out
    cols = ["name", "layer", "module", "rows", "cols", "lora_rank", "fro_norm", "rank_90"]
    assert back.modules[cols].to_dict("records") == results().modules[cols].to_dict("records")
    with pytest.raises(KeyError, match="no module named 'x'"):
        back.spectrum("x")


def test_a_changed_file_is_refused_on_reading(tmp_path):
    out = results().save(tmp_path / "run")
    (out / "summary.json").write_text(json.dumps({"kind": "adapter", "tampered": True}))
    with pytest.raises(LorascopeError, match="differ from what lorascope wrote"):
        load_results(out)
    with pytest.raises(LorascopeError, match="not a lorascope results folder"):
        load_results(tmp_path)


def test_json_is_written_with_plain_values(tmp_path):
    write_json(
        tmp_path / "x.json",
        {"a": np.float32(1.5), "b": np.int64(3), "c": (1, 2), "d": np.float32("nan"), "p": tmp_path},
    )
    assert json.loads((tmp_path / "x.json").read_text()) == {
        "a": 1.5,
        "b": 3,
        "c": [1, 2],
        "d": None,
        "p": str(tmp_path),
    }
    assert vectors_frame([]).columns[0] == "name"
    v = versions()
    assert v["lorascope"] and v["python"].count(".") == 2 and "numpy" in v


def test_write_json_writes_strict_json_that_reads_back(tmp_path):
    """numpy's float64 is a float, so json.dumps would write a bare NaN that the strict reader refuses."""
    from lorascope.limits import loads_json
    from lorascope.results import write_json

    write_json(
        tmp_path / "s.json", {"a": np.float64("nan"), "b": [float("inf"), 1.5], "c": (np.float32(2.0),)}
    )
    assert loads_json((tmp_path / "s.json").read_text(), "s.json") == {
        "a": None,
        "b": [None, 1.5],
        "c": [2.0],
    }


def test_analyzing_an_adapter_and_writing_its_tables_does_not_import_pandas(tmp_path):
    """pandas is for reading tables (notebooks, reports, later commands); `spectrum -q --no-report` writes
    them without it (its import is a fifth of that command's time on a 224-module adapter)."""
    import subprocess
    import sys

    import torch

    from builders import peft_folder

    g = torch.Generator().manual_seed(0)
    tensors = {
        "model.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(8, 16, generator=g),
        "model.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(12, 8, generator=g),
    }
    adapter = peft_folder(tmp_path / "adapter", tensors, {})
    code = (
        "import sys; from lorascope.cli import main\n"
        "try:\n"
        f"    main(['spectrum', {str(adapter)!r}, '--out', {str(tmp_path / 'out')!r}, '-q', '--no-report'])\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["0", "False"], out
    back = load_results(tmp_path / "out")  # and what it wrote reads back whole with pandas
    assert back.modules["name"].tolist() == ["model.layers.0.self_attn.q_proj"]
    assert back.modules["lora_rank"].tolist() == [8]
