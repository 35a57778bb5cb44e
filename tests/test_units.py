"""lorascope/units.py: parameter counts and byte sizes, read and printed one way everywhere."""

import math

import numpy as np
import pandas as pd
import pytest

from lorascope.units import human_bytes, human_count, parse_bytes, parse_count


@pytest.mark.parametrize(
    "text, want",
    [
        ("20M", 20_000_000),
        ("1.5B", 1_500_000_000),
        ("500k", 500_000),
        ("500K", 500_000),
        ("20_000_000", 20_000_000),
        ("2e7", 20_000_000),
        ("1,234,567", 1_234_567),
        ("4.2G", 4_200_000_000),
        ("1.1B", 1_100_000_000),
        ("3T", 3 * 10**12),
        (33554432, 33554432),
        (7e9, 7_000_000_000),
    ],
)
def test_counts_parse_with_decimal_suffixes(text, want):
    assert parse_count(text) == want


@pytest.mark.parametrize("bad", ["1.5", "20X", "-3", "", "1,23", "nan", "inf", True, 0, -5, 0.4])
def test_counts_that_are_not_whole_positive_numbers_are_refused(bad):
    with pytest.raises(ValueError, match="--budget"):
        parse_count(bad, "--budget")


@pytest.mark.parametrize(
    "n, want",
    [
        (12_345_678, "12.3M"),
        (40_000, "40k"),
        (6_738_415_616, "6.74B"),
        (999, "999"),
        (0, "0"),
        (2.5, "2.5"),
        (1.2e12, "1.2T"),
    ],
)
def test_counts_print_with_three_significant_digits(n, want):
    assert human_count(n) == want


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, pd.NA])
def test_missing_numbers_print_as_a_dash(missing):
    assert human_count(missing) == "–" and human_bytes(missing) == "–"


@pytest.mark.parametrize(
    "text, want",
    [
        ("768M", 768 << 20),
        ("2.5G", int(2.5 * (1 << 30))),
        ("8GiB", 8 << 30),
        ("8G", 8 << 30),
        ("1GB", 10**9),
        ("512 KB", 512_000),
        ("4k", 4096),
        ("1e9", 10**9),
        (4096, 4096),
        ("7 B", 7),
        ("3TiB", 3 << 40),
    ],
)
def test_sizes_parse_binary_suffixes_and_decimal_kb_mb_gb(text, want):
    assert parse_bytes(text) == want


@pytest.mark.parametrize("bad", ["12 parsecs", "-1M", "", "0", True, float("inf")])
def test_sizes_that_are_not_positive_are_refused(bad):
    with pytest.raises(ValueError, match="memory"):
        parse_bytes(bad, "memory")


def test_sizes_print_binary_and_read_back():
    assert (
        human_bytes(16 << 20) == "16.0 MiB" and human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB"
    )
    assert human_bytes(3 << 40) == "3.0 TiB" and human_bytes(5 << 50) == "5120.0 TiB"  # no larger unit
    for n in (1 << 20, 3 << 30, 5 << 40):
        number, unit = human_bytes(n).split()
        assert parse_bytes(f"{number}{unit}") == n  # what lorascope prints reads back as the same number


def test_a_fixed_unit_rounds_up_so_a_suggested_size_is_enough():
    n = 27_513 * (1 << 20) + 1
    assert human_bytes(n, "MiB") == "27,514 MiB"
    assert parse_bytes("27514M") >= n and human_bytes(1 << 30, "GiB") == "1 GiB"
    assert math.ceil(n / (1 << 20)) == 27_514
