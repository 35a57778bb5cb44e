"""render_report and render_comparison: where files go, re-rendering without checkpoints, real adapters,
bad input."""

from __future__ import annotations

import shutil

import pytest
import torch
from builders import peft_folder
from report.pageparse import parse_page
from report.synthetic import synthetic_results

import lorascope
from lorascope.errors import LorascopeError
from lorascope.report import build_page, render_comparison, render_report
from lorascope.results import load_results

g = torch.Generator().manual_seed(0)


def test_default_paths_and_an_explicit_out(adapter_dir, adapter_report, tmp_path):
    assert adapter_report == adapter_dir / "report.html"
    assert sorted(p.name for p in (adapter_dir / "figures").iterdir()) == sorted(
        f"{k}.png"
        for k in (
            "heatmaps",
            "spectra",
            "energy",
            "magnitude_distribution",
            "magnitude_profile",
            "sweep_error",
            "sweep_params",
        )
    )
    out = render_report(load_results(adapter_dir), tmp_path / "slides" / "run.html")
    assert out == tmp_path / "slides" / "run.html" and out.is_file()
    assert (tmp_path / "slides" / "run-figures" / "spectra.png").is_file()


def test_rerender_reads_only_the_results_folder(tmp_path):
    """Analyze a real adapter, delete it, and re-render from the saved folder alone."""
    tensors = {}
    for i in range(3):
        for proj in ("q_proj", "v_proj"):
            tensors[f"model.layers.{i}.self_attn.{proj}.lora_A.weight"] = torch.randn(4, 24, generator=g)
            tensors[f"model.layers.{i}.self_attn.{proj}.lora_B.weight"] = torch.randn(24, 4, generator=g)
    adapter = peft_folder(tmp_path / "adapter", tensors, {"r": 4, "lora_alpha": 8})
    folder = lorascope.analyze(adapter).save(tmp_path / "results")
    shutil.rmtree(adapter)
    html = render_report(folder).read_text(encoding="utf-8")
    page = parse_page(html)
    assert len(page.table("sortable").rows) == 6
    assert str(adapter) in html  # the inputs section still names what was analyzed


def test_real_fixture_adapter(real_fixtures, tmp_path):
    adapter = real_fixtures / "peft" / "abrhaleyarefaine1997+gpt2-tigrinya-lora"
    folder = lorascope.analyze(adapter).save(tmp_path / "gpt2")
    page = parse_page(render_report(folder).read_text(encoding="utf-8"))
    assert page.sections[:8] == [
        "inputs",
        "headline",
        "heatmaps",
        "spectra",
        "energy",
        "magnitudes",
        "sweep",
        "modules",
    ]
    assert len(page.images) == 7 and all(i["src"].startswith("data:image/png;base64,") for i in page.images)
    table = page.table("sortable")
    assert len(table.rows) == 36  # 12 layers × attn.c_attn, attn.c_proj, mlp.c_proj
    assert {r[table.header.index("lora_rank")] for r in table.rows} == {"8"}


def test_real_diffusion_lora_averages_blocks_that_share_a_layer(real_fixtures):
    """An SD-1.5 LoRA: down and up blocks share layer indices; the page says the cells are means."""
    lora = real_fixtures / "lora_files" / "timohavdk_pytorch_lora_weights.safetensors"
    page = build_page(lorascope.analyze(lora))
    heat = next(s for s in page.sections if s.key == "heatmaps")
    assert any("show the mean" in getattr(b, "text", "") for b in heat.blocks)


def test_truncated_spectra_are_flagged(tmp_path):
    folder = synthetic_results(2, kind="full-diff", hidden=32, top_k=5).save(tmp_path / "topk")
    page = build_page(load_results(folder))
    sweep = next(s for s in page.sections if s.key == "sweep")
    assert any(getattr(b, "level", "") == "warn" and "randomized top-k" in b.text for b in sweep.blocks)
    assert any(
        "top-k" in getattr(b, "text", "") for b in next(s for s in page.sections if s.key == "modules").blocks
    )


def test_not_a_results_folder(tmp_path):
    (tmp_path / "something.txt").write_text("hello")
    with pytest.raises(LorascopeError, match="not a lorascope results folder"):
        render_report(tmp_path)
    with pytest.raises(LorascopeError, match="never saved"):
        render_report(synthetic_results(1))


def test_comparison_of_three_runs(tmp_path):
    runs = [
        synthetic_results(3, kind="adapter", r=4, hidden=32).save(tmp_path / "r4"),
        synthetic_results(3, kind="adapter", r=16, hidden=32).save(tmp_path / "r16"),
        synthetic_results(3, kind="full-diff", hidden=32, unlayered=("lm_head",)).save(tmp_path / "full"),
    ]
    out = render_comparison(runs, tmp_path / "compare.html")
    assert out == tmp_path / "compare.html"
    page = parse_page(out.read_text(encoding="utf-8"))
    assert page.sections == ["runs", "headline", "energy", "heatmaps", "joined"]
    assert [i["data-figure"] for i in page.images] == [
        "compare_energy",
        "compare_heatmap_entropy_rank",
        "compare_heatmap_rank_90",
        "compare_heatmap_fro_norm",
        "compare_heatmap_stable_rank",
    ]
    assert (tmp_path / "compare-figures" / "compare_energy.png").is_file()
    joined = page.table("sortable")
    assert len(joined.rows) == 10  # 9 shared names + lm_head of the full fine-tune
    assert "entropy_rank · r4" in joined.header and "entropy_rank · full" in joined.header


def test_comparison_refusals(tmp_path, adapter_dir):
    with pytest.raises(LorascopeError, match="at least two"):
        render_comparison([adapter_dir], tmp_path / "c.html")
    with pytest.raises(LorascopeError, match="one label per folder"):
        render_comparison([adapter_dir, adapter_dir], tmp_path / "c.html", labels=["a"])
    with pytest.raises(LorascopeError, match="not a lorascope results folder"):
        render_comparison([adapter_dir, tmp_path], tmp_path / "c.html")


def test_edge_cases_render(tmp_path):
    """No module at all; an all-zero update beside normal ones (nothing to draw on a log axis)."""
    import numpy as np

    from lorascope.metrics import module_metrics
    from lorascope.results import Results, modules_frame, vectors_frame

    empty = Results(modules_frame([]), {}, {"kind": "adapter"}, vectors_frame([])).save(tmp_path / "empty")
    page = parse_page(render_report(empty).read_text(encoding="utf-8"))
    assert page.sections == ["inputs", "headline", "modules"] and page.table("sortable").rows == []

    res = synthetic_results(1, kind="full-diff", hidden=8, types=("mlp.zero", "mlp.up"))
    rows = res.modules.to_dict("records")
    zero = next(r for r in rows if r["module"] == "mlp.zero")
    zero.update(module_metrics(np.zeros(8), (8, 8), 0.0, base_fro_norm=1.0))
    res.spectra[zero["name"]] = np.zeros(8, np.float32)
    res.modules = modules_frame(rows)
    page = parse_page(render_report(res.save(tmp_path / "zero")).read_text(encoding="utf-8"))
    assert len(page.images) == 7


def test_many_runs_get_a_short_title_and_a_table_per_metric():
    from lorascope.report.blocks import TableBlock
    from lorascope.report.comparison import build_comparison_page

    runs = [synthetic_results(2, kind="adapter", r=r, hidden=32) for r in (1, 2, 4, 8, 16)]
    labels = [f"r{r}" for r in (1, 2, 4, 8, 16)]
    page = build_comparison_page(runs, labels)
    assert page.title == "Comparison: 5 analyses, r1 … r16"
    headline = next(s for s in page.sections if s.key == "headline")
    tables = [b for b in headline.blocks if isinstance(b, TableBlock)]
    assert len(tables) == 3 and all(list(t.data["run"]) == labels for t in tables)
    med = runs[2].modules.assign(t=runs[2].modules["module"]).groupby("t")["entropy_rank"].median()
    first = tables[0].data.set_index("run")
    assert first.shape[1] == med.size  # one column per module type
    assert sorted(first.loc["r4"].to_numpy()) == pytest.approx(sorted(med.to_numpy()))


def test_a_report_loads_no_checkpoint_reader(adapter_dir, tmp_path):
    """Rendering reads saved results only: in a fresh interpreter it imports neither lorascope.checkpoint nor
    the rank package's sweep and export commands (``lorascope.rank`` loads its rooms on first use)."""
    import ast
    import shutil
    import subprocess
    import sys

    folder = shutil.copytree(adapter_dir, tmp_path / "results")
    code = (
        "import sys; from lorascope.report import render_report; render_report(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.startswith(('lorascope.checkpoint', 'lorascope.rank'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True
    )
    loaded = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert loaded == [
        "lorascope.rank",
        "lorascope.rank.knapsack",
        "lorascope.rank.spectra",
        "lorascope.rank.sweep",
    ]
