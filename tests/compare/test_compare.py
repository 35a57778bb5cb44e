"""lorascope/compare/__init__.py: the comparison's entry points and its options, under their one name each."""

import lorascope.compare as compare


def test_the_public_names_are_there():
    for name in compare.__all__:
        assert hasattr(compare, name), name
