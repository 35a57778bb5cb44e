"""lorascope/rank/evaluation.py: what a functional sweep evaluates with — examples read from text or JSONL,
and trainer run folders recognised by what they declare."""

import json

import pytest

from lorascope.errors import LorascopeError
from lorascope.rank.evaluation import (
    LOSS,
    RUN_METRICS,
    EvalOptions,
    is_trainer_run,
    read_examples,
    trainer_run,
)


def test_examples_from_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first text\nsecond text\nthird\n")
    assert (
        len(read_examples(tmp_path / "a.txt", None)) == 3 and len(read_examples(tmp_path / "a.txt", 2)) == 2
    )
    (tmp_path / "b.jsonl").write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    (example,) = read_examples(tmp_path / "b.jsonl", None)
    assert example.prompt == "q" and example.completion == "a"


def test_a_trainer_run_is_a_folder_with_its_metrics(tmp_path):
    sweep = tmp_path
    tmp_path = sweep / "run-1"
    tmp_path.mkdir()
    assert LOSS == "eval_loss" and not is_trainer_run(tmp_path)
    (tmp_path / RUN_METRICS).write_text("{}")
    assert not is_trainer_run(tmp_path)  # metrics alone: no tuned/ model
    (tmp_path / "tuned").mkdir()
    assert is_trainer_run(tmp_path)
    with pytest.raises(LorascopeError, match="the base model of the run"):
        trainer_run(tmp_path)  # neither a recorded base nor the sweep's shared base/ beside the run
    (sweep / "base").mkdir()
    (sweep / "base" / "config.json").write_text("{}")
    run = trainer_run(tmp_path)
    assert run.base == sweep / "base" and run.update == tmp_path / "tuned"
    assert EvalOptions().batch_size >= 1
