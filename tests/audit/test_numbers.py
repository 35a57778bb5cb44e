"""Human-readable numbers in and out: claims as people write them."""

import pytest

from lorascope.audit.numbers import both, format_ranges, parse_count, parse_layers, parse_percent
from lorascope.errors import LorascopeError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("33M", 33_000_000),
        ("4.2B", 4_200_000_000),
        ("1,234,567", 1_234_567),
        ("7e9", 7_000_000_000),
        ("4.19m", 4_190_000),
        ("12 K", 12_000),
        ("1_000", 1000),
        (4194304, 4_194_304),
        ("0.5T", 500_000_000_000),
    ],
)
def test_parse_count(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "33MB",
        "abc",
        "1,23,4",
        "-5",
        "",
        "4.2 billion",
        True,
        "0",
        0,
        "0.4",
        "1e400",
        float("inf"),
        float("nan"),
    ],
)
def test_parse_count_refuses(text):
    with pytest.raises(LorascopeError, match="--claim .* is not a parameter count"):
        parse_count(text, "--claim")


def test_parse_percent():
    assert parse_percent("0.45") == parse_percent("0.45%") == parse_percent(0.45) == 0.45
    for bad in ("120", "0", 0, -1, float("nan"), "1e400"):
        with pytest.raises(LorascopeError, match="must lie above 0 and at most 100"):
            parse_percent(bad)
    with pytest.raises(LorascopeError, match="is not a percentage"):
        parse_percent("half")


def test_parse_layers():
    assert parse_layers("0-3") == (0, 1, 2, 3)
    assert parse_layers("0,2,4-5") == (0, 2, 4, 5)
    assert parse_layers([3, 1]) == (1, 3)
    assert parse_layers(7) == (7,)
    with pytest.raises(LorascopeError, match="layer 99999999999 is beyond any model"):
        parse_layers("0-99999999999")  # refused before any list of that length is built
    assert parse_layers(None) is None
    with pytest.raises(LorascopeError, match="runs backwards; write 3-5"):
        parse_layers("5-3")
    with pytest.raises(LorascopeError, match="'x' is not a layer index"):
        parse_layers("0,x")


def test_counts_print_exactly_and_in_short():
    assert both(4_194_304) == "4,194,304 (4.19M)" and both(6_738_415_616) == "6,738,415,616 (6.74B)"
    assert both(512) == "512"  # short forms are lorascope.units.human_count's (tests/test_units.py)
    assert format_ranges([5, 0, 2, 1, 7, 8]) == "0-2,5,7-8"
