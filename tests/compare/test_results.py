"""lorascope/compare/results.py: the comparison tables written as one transaction and read back."""

import pandas as pd
import pytest

from lorascope.compare.results import SUMMARY_JSON, TABLES, CompareResults, load_compare
from lorascope.errors import LorascopeError


def test_tables_round_trip_and_stale_ones_go(tmp_path):
    modules = pd.DataFrame({"name": ["a"], "cosine": [0.5]})
    res = CompareResults(
        {"kind": "compare"}, modules=modules, sweep=pd.DataFrame({"epsilon": [0.5], "intruders": [1]})
    )
    out = res.save(tmp_path / "cmp")
    assert (out / SUMMARY_JSON).is_file() and (out / TABLES["modules"]).is_file()
    back = load_compare(out)
    assert back.summary == {"kind": "compare"} and back.modules.equals(modules) and back.intruders is None
    CompareResults({"kind": "compare"}, modules=modules).save(out)  # a later run without the sweep
    assert not (out / TABLES["sweep"]).exists() and load_compare(out).sweep is None


def test_a_folder_without_a_comparison_is_refused(tmp_path):
    with pytest.raises(LorascopeError, match="holds no comparison results"):
        load_compare(tmp_path)
