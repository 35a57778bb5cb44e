"""lorascope/compare/options.py: flat options routed to their owners, one name per concept, old names
warned."""

import pytest

from lorascope.compare.options import RENAMED_OPTIONS, RunOptions, build_options
from lorascope.errors import LorascopeError


def test_one_svd_option_reaches_every_dense_top_k_and_old_names_still_work():
    pair, run = build_options(svd="randomized", intruder_k=4, cap=8, device="cpu")
    assert (
        pair.svd == pair.intruders.svd == "randomized"
        and pair.intruders.intruder_k == 4
        and pair.grid.cap == 8
    )
    with pytest.warns(FutureWarning, match="'top_k' is now 'intruder_k'"):
        pair, _ = build_options(top_k=3, tuned_svd="randomized")
    assert pair.intruders.intruder_k == 3 and pair.intruders.svd == "randomized"
    assert RENAMED_OPTIONS == {"top_k": "intruder_k", "tuned_svd": "svd", "dense_svd": "svd"}
    with pytest.raises(LorascopeError, match="unknown option 'k'"):
        build_options(k=3)
    with pytest.raises(LorascopeError, match="give 'intruder_k' only"), pytest.warns(FutureWarning):
        build_options(top_k=3, intruder_k=4)
    pair, _ = build_options(intruders=False)
    assert pair.intruders is None


def test_run_options_check_the_device():
    assert RunOptions(device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        RunOptions(device="tpu")
