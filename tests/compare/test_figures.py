"""The comparison figures and report section, from saved tables only."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lorascope.compare import compare, load_compare
from lorascope.report import compare_figures as cf
from lorascope.report.blocks import CardsBlock, FigureBlock, TableBlock


def test_figures_and_blocks_from_saved_tables(tiny, tmp_path):
    base = tiny.base_file()
    res = compare(tiny.adapter("r4", 4, seed=1), tiny.adapter("r8", 8, seed=2), base, intruder_k=3)
    back = load_compare(res.save(tmp_path / "out"))
    blocks = cf.compare_blocks(back)
    figures = [b for b in blocks if isinstance(b, FigureBlock)]
    assert [f.key for f in figures] == [
        "compare_phi",
        "compare_overlap",
        "compare_amplification",
        "compare_intruders",
    ]
    for f in figures:
        fig = f.draw()
        assert isinstance(fig, Figure) and fig.axes
    cards = {label: value for label, value, _ in next(b for b in blocks if isinstance(b, CardsBlock)).items}
    assert cards["modules"] == "6" and "r8: intruders" in cards
    tables = [b.data for b in blocks if isinstance(b, TableBlock)]
    t7 = next(t for t in tables if "amplification" in t.columns and "‖UᵀWV‖ random" in t.columns)
    assert set(t7["update"]) == {"r4", "r8"} and len(t7) == 6
    med = back.amplification.query("update == 'r4' and module == 'self_attn.q_proj'")[
        "amplification"
    ].median()
    assert t7.query("update == 'r4' and `module type` == 'self_attn.q_proj'")["amplification"].item() == med


def test_mean_phi_grid_averages_layers():
    sim = pd.DataFrame(
        {
            "name": ["model.layers.0.q", "model.layers.0.q", "model.layers.1.q", "model.layers.1.q"],
            "layer": [0, 0, 1, 1],
            "module": ["q"] * 4,
            "side": ["left"] * 4,
            "i": [1, 1, 1, 1],
            "j": [1, 2, 1, 2],
            "phi": [0.2, 0.4, 0.6, 1.0],
            "random": [0.1] * 4,
        }
    )
    grid = cf.mean_phi_grids(sim)["q"]
    np.testing.assert_allclose(grid.to_numpy(), [[0.4, 0.7]])


def test_render_compare_report_for_intruders_only(tiny, tmp_path):
    from lorascope.compare import intruders

    res = intruders(tiny.base_file(), tiny.adapter("lora", 4, seed=3), intruder_k=2)
    out = res.save(tmp_path / "intr")
    html = cf.render_compare_report(out)
    text = html.read_text()
    assert "Intruder dimensions" in text and (out / "figures" / "compare_intruders.png").is_file()
    assert not (out / "figures" / "compare_phi.png").exists()
