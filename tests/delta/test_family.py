"""lorascope/delta/family.py: the registry claims a module's family from exactly the part set it holds."""

import pytest

from lorascope.delta import FAMILIES
from lorascope.delta.family import claim


def test_every_layout_is_claimed_by_one_family_only():
    seen = {}
    for family in FAMILIES.values():
        for layout in family.part_sets:
            assert layout not in seen, (layout, seen.get(layout), family.name)
            seen[layout] = family.name
            assert claim(layout) == (family.name, {})
    assert {"lora", "loha", "lokr", "full", "ia3"} <= set(seen.values())


@pytest.mark.parametrize(
    "parts,want",
    [
        ({"up", "down"}, ("lora", {})),
        ({"up", "down", "mid"}, ("lora", {})),
        ({"up", "down", "magnitude"}, ("dora", {"inner": "lora"})),
        ({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "magnitude"}, ("dora", {"inner": "loha"})),
        ({"lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2"}, ("lokr", {})),
        ({"lokr_w1", "lokr_w2", "magnitude"}, ("dora", {"inner": "lokr"})),
        ({"diff"}, ("full", {})),
        ({"diff", "magnitude"}, None),  # only LoCon, LoHa and LoKr are weight-decomposed (LyCORIS)
        ({"scale", "magnitude"}, None),
        ({"up"}, None),
        ({"up", "down", "hada_w1_a"}, None),  # parts of two families: nothing guessed
        ({"lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2"}, None),
    ],
)
def test_claim(parts, want):
    assert claim(parts) == want
