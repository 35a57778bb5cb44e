"""lorascope/delta/experts.py: which fused-expert layout a base declares."""

from lorascope.delta.experts import PLAIN_EXPERTS, TRANSPOSED_EXPERTS, declared_model_type


def test_the_model_type_is_read_from_the_config_or_its_text_config():
    kind = sorted(TRANSPOSED_EXPERTS)[0]
    assert declared_model_type({"model_type": kind}) == kind
    plain = sorted(PLAIN_EXPERTS)[0]
    assert declared_model_type({"model_type": "llava", "text_config": {"model_type": plain}}) == plain
    assert declared_model_type({"model_type": "bert"}) is None and declared_model_type(None) is None
    assert not TRANSPOSED_EXPERTS & PLAIN_EXPERTS
