"""lorascope/train/tokenizer.py: the word-level tokenizer, and its tokenizer.json read by the ``tokenizers``
library itself."""

import pytest

from lorascope.train.tokenizer import WordTokenizer, from_hf_tokenizer_json, hf_tokenizer_json


def test_encode_decode_and_unknown_words():
    tok = WordTokenizer(("capital", "of", "paris", "."))
    assert tok.vocab_size == 8 and tok.encode("Capital of Paris .") == [4, 5, 6, 7]
    assert tok.encode("capital of rome") == [4, 5, tok.unk_id] and tok.decode([4, 6]) == "capital paris"
    assert tok.unknown_fraction(["capital of rome", "paris"]) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="distinct"):
        WordTokenizer(("a", "a"))


def test_tokenizer_json_round_trips_and_the_library_agrees():
    tok = WordTokenizer(("the", "capital", "of", "x", "is", "."))
    data = hf_tokenizer_json(tok)
    assert from_hf_tokenizer_json(data) == tok
    tokenizers = pytest.importorskip("tokenizers")
    import json

    hf = tokenizers.Tokenizer.from_str(json.dumps(data))
    ids = hf.encode("The capital of X is .").ids
    assert ids == [tok.bos_id] + tok.encode("The capital of X is .")  # [BOS] prepended by the post-processor
