"""lorascope/delta/__init__.py: every family is registered once, with its formula, source and form."""

import lorascope.delta as delta
from lorascope.delta import FAMILIES, family_of


def test_every_family_states_its_formula_source_and_form():
    assert {
        "dense",
        "lora",
        "dora",
        "lora_expert",
        "adalora",
        "vera",
        "loha",
        "lokr",
        "full",
        "ia3",
        "oft",
        "boft",
    } <= set(FAMILIES)
    for name, family in FAMILIES.items():
        assert family.name == name and family.formula and family.reference
        assert family.parts or family.optional or family.part_sets, name  # what it stores (LoKr: either form)
        assert family.form in ("LowRank", "Kronecker", "Dense")
        assert family_of(name) is family
    for exported in delta.__all__:
        assert hasattr(delta, exported), exported
