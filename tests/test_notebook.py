"""Notebooks: results show themselves, tables are pandas, figures are functions returning Figures, and the
example notebook runs from top to bottom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import peft_folder
from matplotlib.figure import Figure

from lorascope import analyze, figures, load_results

ROOT = Path(__file__).resolve().parents[1]
g = torch.Generator().manual_seed(4)


@pytest.fixture
def results(tmp_path):
    tensors = {}
    for i in range(3):
        for proj in ("q_proj", "v_proj"):
            tensors[f"model.layers.{i}.self_attn.{proj}.lora_A.weight"] = torch.randn(4, 16, generator=g)
            tensors[f"model.layers.{i}.self_attn.{proj}.lora_B.weight"] = torch.randn(16, 4, generator=g)
    return analyze(peft_folder(tmp_path / "adapter", tensors, {"r": 4, "lora_alpha": 8}))


def test_modules_and_spectra_are_pandas_and_read_like_before(results, tmp_path):
    assert isinstance(results.modules, pd.DataFrame) and isinstance(results.spectra, pd.Series)
    name = results.modules["name"].iloc[0]
    assert name in results.spectra and list(results.spectra.index) == list(results.modules["name"])
    np.testing.assert_array_equal(results.spectra[name], results.spectrum(name))
    assert results.spectra[name].shape == (4,) and dict(results.spectra.items()).keys() == set(
        results.spectra.index
    )
    reloaded = load_results(results.save(tmp_path / "saved"))
    assert isinstance(reloaded.spectra, pd.Series)
    np.testing.assert_allclose(reloaded.spectra[name], results.spectra[name], rtol=1e-6)


def test_results_show_headline_cards_and_main_figures(results):
    page = results._repr_html_()
    assert "median entropy_rank" in page and "modules analyzed" in page
    assert page.count("<img src='data:image/png;base64,") == 2  # heatmaps and energy (no training record)
    assert "<script" not in page


def test_every_report_figure_is_a_function_returning_a_figure(results):
    have = figures.names(results)
    assert have == [
        "heatmaps",
        "spectra",
        "energy",
        "magnitude_distribution",
        "magnitude_profile",
        "sweep_error",
        "sweep_params",
    ]
    for f in (
        figures.heatmaps,
        figures.spectra,
        figures.energy,
        figures.magnitudes,
        figures.magnitude_profile,
        figures.sweep,
        figures.sweep_params,
    ):
        assert isinstance(f(results), Figure)
    assert isinstance(results.figure("energy"), Figure)
    with pytest.raises(KeyError, match="no figure named 'training_spectra'.*they have: heatmaps"):
        figures.training(results)


@pytest.mark.hf
def test_the_example_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("peft")
    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("median entropy_rank" in h for h in html)  # the results object showed itself
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # figures.training, figures.spectra
    assert any("step 20: loss" in o.get("text", "") for o in outputs if o.output_type == "stream")
