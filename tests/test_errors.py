"""lorascope/errors.py: the one error type for bad input, problems collected into one message, and notes."""

import pytest

from lorascope.errors import LorascopeError, note, raise_collected


def test_raise_collected_lists_every_problem_once_and_is_silent_without_any():
    raise_collected([], "nothing")  # no problem: returns
    with pytest.raises(LorascopeError) as info:
        raise_collected([f"p{i}" for i in range(45)], "the file has problems:")
    text = str(info.value)
    assert text.startswith("the file has problems:\n  - p0") and "  - p39" in text and "p40" not in text
    assert text.endswith("… and 5 more")


def test_notes_travel_with_any_exception():
    exc = ValueError("boom")
    note(exc, "the folder was left as it was")
    note(exc, "and a second note")
    assert exc.__notes__ == ["the folder was left as it was", "and a second note"]
    fresh = KeyError("k")
    note(fresh, "fine")  # an exception without notes gets a list
    assert fresh.__notes__ == ["fine"]
