"""lorascope/cli/summary.py: the terminal summary's medians per module type."""

import pytest

from lorascope.cli.summary import module_type_table
from lorascope.results import modules_frame


def test_medians_per_type_group_layers_together():
    rows = [
        {
            "name": f"model.layers.{i}.q",
            "layer": i,
            "module": "q",
            "rows": 4,
            "cols": 4,
            "lora_rank": 8,
            "entropy_rank": e,
            "rank_90": r,
            "fro_norm": f,
        }
        for i, (e, r, f) in enumerate([(1.0, 2, 3.0), (3.0, 4, 5.0), (2.0, 3, 4.0)])
    ]
    table = module_type_table(modules_frame(rows))
    assert list(table.index) == ["q"] and table.loc["q", "n"] == 3
    assert table.loc["q", "entropy_rank"] == pytest.approx(2.0) and table.loc[
        "q", "fro_norm"
    ] == pytest.approx(4.0)
    assert table.loc["q", "rank_90"] == pytest.approx(3.0)
