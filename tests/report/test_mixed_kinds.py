"""Every kind of results renders, alone and beside every other kind.

Six real analyses of tiny checkpoints: an adapter alone, an adapter on its base, a full fine-tune, a
randomized top-k of that fine-tune whose ranks lie beyond k (empty <NA> cells), an adapter that never
trained (lora_B = 0) and a fine-tune that changed one module only (zero updates elsewhere). Each gets its
report; render_comparison sets every pair side by side, and all six together.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from builders import peft_folder, save_st
from report.pageparse import parse_page

import lorascope
from lorascope.report import build_page, render_comparison, render_report
from lorascope.report.comparison import build_comparison_page

MODULES = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
KINDS = ("adapter", "adapter+base", "full", "topk", "zero-adapter", "zero-full")
HIDDEN, R, TOP_K = 24, 4, 2


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, object]:
    """Results folder of each kind (saved, so pages re-render from disk as the CLI does)."""
    tmp = tmp_path_factory.mktemp("mixed-kinds")
    g = torch.Generator().manual_seed(0)
    base = {f"{n}.weight": torch.randn(HIDDEN, HIDDEN, generator=g) for n in MODULES}
    base["lm_head.weight"] = torch.randn(40, HIDDEN, generator=g)
    tuned = {k: v + 0.3 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    one_changed = dict(base, **{f"{MODULES[0]}.weight": base[f"{MODULES[0]}.weight"] + 1.0})
    save_st(tmp / "base.safetensors", base)
    save_st(tmp / "tuned.safetensors", tuned)
    save_st(tmp / "one-changed.safetensors", one_changed)
    factors, zero = {}, {}
    for n in MODULES:
        a, b = torch.randn(R, HIDDEN, generator=g), torch.randn(HIDDEN, R, generator=g)
        factors |= {f"{n}.lora_A.weight": a, f"{n}.lora_B.weight": b}
        zero |= {f"{n}.lora_A.weight": a, f"{n}.lora_B.weight": torch.zeros_like(b)}
    config = {"r": R, "lora_alpha": 2 * R, "target_modules": ["q_proj", "v_proj"]}
    adapter = peft_folder(tmp / "adapter", factors, config)
    untrained = peft_folder(tmp / "untrained", zero, config)
    b, t, o = tmp / "base.safetensors", tmp / "tuned.safetensors", tmp / "one-changed.safetensors"
    runs = {
        "adapter": lorascope.analyze(adapter),
        "adapter+base": lorascope.analyze(b, adapter),
        "full": lorascope.analyze(b, t),
        "topk": lorascope.analyze(b, t, top_k=TOP_K),
        "zero-adapter": lorascope.analyze(untrained),
        "zero-full": lorascope.analyze(b, o),
    }
    return {kind: res.save(tmp / "results" / kind) for kind, res in runs.items()}


def test_the_kinds_are_what_they_claim(kinds):
    """The fixtures hold the cases that broke pages: <NA> ranks beyond a top-k, and exactly zero updates."""
    m = {k: lorascope.load_results(v).modules for k, v in kinds.items()}
    assert m["topk"]["rank_90"].isna().all() and (m["topk"]["method"] == "randomized").all()
    assert m["topk"]["rank_90"].dtype == "Int64"
    assert (m["zero-adapter"]["fro_norm"] == 0).all() and (m["zero-adapter"]["rank_90"] == 0).all()
    assert (m["zero-full"]["fro_norm"] == 0).sum() == len(m["zero-full"]) - 1
    assert m["adapter"]["lora_rank"].notna().all() and m["full"]["lora_rank"].isna().all()
    assert m["adapter+base"]["relative_update"].notna().all() and m["adapter"]["relative_update"].isna().all()


def draw_all(page) -> int:
    """Draw and rasterize every figure of a page (layout included: where log scales of zeros and NaN limits
    fail); PNG encoding, five times slower, is left to the full renders below."""
    for block in page.figures:
        fig = block.draw()
        fig.canvas.draw()
        fig.clear()
    return len(page.figures)


@pytest.mark.parametrize("kind", KINDS)
def test_report_page_of_each_kind(kinds, kind):
    page = build_page(lorascope.load_results(kinds[kind]))
    assert [s.key for s in page.sections][:2] == ["inputs", "headline"]
    if kind == "zero-adapter":  # every ΔW is zero: nothing to draw, and the page says why
        headline = next(s for s in page.sections if s.key == "headline").blocks
        assert len(headline) == 1 and "has ΔW = 0 exactly" in headline[0].text and headline[0].level == "warn"
        assert draw_all(page) == 0
        return
    assert draw_all(page) >= 5  # heatmaps, spectra, energy, magnitudes (two), sweep (two)


def test_report_of_top_k_and_zero_updates(kinds):
    """The full render, read back: ranks beyond k are empty cells, zero updates are 0."""
    for kind in ("topk", "zero-full"):
        page = parse_page(render_report(kinds[kind]).read_text(encoding="utf-8"))
        assert page.sections[:2] == ["inputs", "headline"] and "modules" in page.sections
        table = page.table("sortable")
        assert len(table.rows) == len(MODULES) + 1
        rank_90 = [r[table.header.index("rank_90")] for r in table.rows]
        assert set(rank_90) == ({""} if kind == "topk" else {"0", "1"})


@pytest.mark.parametrize("pair", list(itertools.combinations(KINDS, 2)), ids="-vs-".join)
def test_comparison_page_of_every_pair(kinds, pair):
    runs = [lorascope.load_results(kinds[k]) for k in pair]
    page = build_comparison_page(runs, list(pair))
    headline = next(s for s in page.sections if s.key == "headline").blocks[0].data
    for label, run in zip(pair, runs):
        rows = headline[headline["run"] == label]
        known = bool(run.modules["rank_90"].notna().any())
        assert rows["rank_90 median"].notna().all() if known else rows["rank_90 median"].isna().all()
    assert draw_all(page) >= 1


def test_comparison_of_all_kinds_together(kinds, tmp_path):
    html = render_comparison([kinds[k] for k in KINDS], tmp_path / "all.html", labels=list(KINDS))
    page = parse_page(html.read_text(encoding="utf-8"))
    assert page.sections[:2] == ["runs", "headline"] and len(page.images) >= 1
    joined = page.table("sortable")
    assert len(joined.rows) == len(MODULES) + 1  # lm_head is only in the full diffs: empty cells elsewhere
    # no value known: no column
    assert "rank_90 · topk" not in joined.header and "rank_90 · full" in joined.header
    zero_col = joined.header.index("rank_90 · zero-adapter")
    assert {r[zero_col] for r in joined.rows} == {"0", ""}


def test_one_run_page_values_for_top_k_and_zero(kinds):
    """Headline medians: unknown for ranks beyond k (NaN, shown empty), 0 for an update that is zero."""
    topk = build_page(lorascope.load_results(kinds["topk"]))
    summary = next(s for s in topk.sections if s.key == "headline").blocks[1].data
    assert summary["rank_90 median"].isna().all()
    size = "fro_norm median" if "fro_norm median" in summary else "relative_update median"
    assert np.isfinite(summary[size]).all()
    zero = build_page(lorascope.load_results(kinds["zero-full"]))  # one matrix changed of 5 (lm_head too)
    headline = next(s for s in zero.sections if s.key == "headline").blocks
    note = next(b for b in headline if getattr(b, "level", "") == "warn")
    assert note.text.startswith("4 of 5 modules have ΔW = 0 exactly")
    for name in MODULES[1:] + ["lm_head"]:
        assert name in note.text  # every zero update named
    summary = headline[2].data  # the medians: of the one module that changed, not dragged to 0 by the others
    assert isinstance(summary, pd.DataFrame) and (summary["rank_90 median"].dropna() >= 1).all()
    table = next(s for s in zero.sections if s.key == "modules").blocks[-1].data
    assert len(table) == len(lorascope.load_results(kinds["zero-full"]).modules)  # the table still lists them
