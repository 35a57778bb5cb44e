"""load_results read modules.csv with pandas' default parsing, so a module's name came back as whatever
pandas made of its text: PEFT on a nested nn.Sequential names modules "0.1" and "0.10", both read back as
the float 0.1, and the second row silently took the first one's spectrum; names such as "NA", "None",
"null", "N/A", "007" or "1e5" were refused as having no spectrum, "nan" became a missing name, and a carriage
return in a name (left unquoted by the csv module before Python 3.13, as pandas leaves it) split the row.
Saving the loaded results again then wrote other bytes. A name must read back as the text that was
written."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import save_file

import lorascope
from lorascope.results import Results, load_results

ROW = {"layer": 0, "module": "q", "rows": 4, "cols": 3, "source": "peft", "family": "lora", "lora_rank": 1}


def test_peft_names_of_a_nested_sequential_keep_their_spectra(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i, child in enumerate(("1", "10")):  # nn.Sequential(nn.Sequential(11 × Linear)): modules 0.1, 0.10
        scale = 10.0**i  # so the two spectra differ by 10×
        tensors[f"base_model.model.0.{child}.lora_A.weight"] = torch.randn(2, 8, generator=g)
        tensors[f"base_model.model.0.{child}.lora_B.weight"] = scale * torch.randn(8, 2, generator=g)
    save_file(tensors, adapter / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["0.1", "0.10"]}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    res = lorascope.analyze(str(adapter))
    res.save(tmp_path / "a")
    back = load_results(tmp_path / "a")
    assert back.modules["name"].tolist() == ["0.1", "0.10"]
    for name in ("0.1", "0.10"):
        row = back.modules.set_index("name").loc[name]
        assert row["spectral_norm"] == res.modules.set_index("name").loc[name, "spectral_norm"]
        np.testing.assert_allclose(back.spectrum(name)[0], row["spectral_norm"], rtol=1e-6)
    back.save(tmp_path / "b")
    for f in ("modules.csv", "vectors.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_names_pandas_would_parse_read_back_as_written(tmp_path):
    names = ["NA", "None", "null", "N/A", "nan", "007", "1e5", "True", "inf", "a\rb", "a\r\nb", "", " x "]
    rows = [dict(ROW, name=n, module=n, fro_norm=float(i)) for i, n in enumerate(names)]
    spectra = {n: np.array([float(i) + 1.0]) for i, n in enumerate(names)}
    vectors = [{"name": n, "layer": None, "module": n, "size": 3, "fro_norm": 0.5} for n in names]
    Results(rows, spectra, {"kind": "adapter"}, vectors).save(tmp_path / "a")
    back = load_results(tmp_path / "a")
    assert back.modules["name"].tolist() == names
    assert back.vectors["name"].tolist() == names
    assert [back.spectrum(n)[0] for n in names] == [float(i) + 1.0 for i in range(len(names))]
    assert back.modules["fro_norm"].tolist() == [float(i) for i in range(len(names))]
    back.save(tmp_path / "b")
    for f in ("modules.csv", "vectors.csv", "singular_values.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
