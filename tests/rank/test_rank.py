"""lorascope/rank/__init__.py: the package's entry points are importable from it."""

import lorascope.rank as rank


def test_the_public_names_are_there():
    for name in rank.__all__:
        assert hasattr(rank, name), name
    assert callable(rank.run_sweep) and callable(rank.run_select) and "budget" in rank.POLICIES
