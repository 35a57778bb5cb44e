"""lorascope/audit/__init__.py: the audit's entry points are importable from the package."""

import lorascope.audit as audit


def test_the_public_names_are_there():
    for name in audit.__all__:
        assert hasattr(audit, name), name
    assert callable(audit.audit_source) and callable(audit.count_lora) and "square_kv" in audit.MISTAKES
