"""lorascope/cli/train.py: the trainer's commands offer exactly the methods the trainer has."""

from click.testing import CliRunner

from lorascope.cli import main
from lorascope.cli.train import METHOD_NAMES
from lorascope.train.methods import METHODS


def test_the_method_choices_are_the_trainers():
    assert METHOD_NAMES == list(METHODS)
    res = CliRunner().invoke(main, ["train", "--method", "adapterfusion"])
    assert res.exit_code == 2 and "adapterfusion" in res.output
