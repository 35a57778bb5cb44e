"""lorascope/cli/options.py: an option's old spelling still works, says its new name, and never both at
once."""

import click
from click.testing import CliRunner

from lorascope.cli.options import renamed, takes_renamed


@click.command()
@renamed("--old-k", "--new-k", "new_k")
@click.option("--new-k", type=int, default=7, callback=takes_renamed)
def command(new_k):
    click.echo(f"k={new_k}")


def test_the_old_spelling_reaches_the_new_option_and_says_so():
    assert CliRunner().invoke(command, []).output == "k=7\n"
    res = CliRunner().invoke(command, ["--old-k", "3"])
    assert res.exit_code == 0 and "k=3" in res.output and "--old-k is now --new-k" in res.output
    assert CliRunner().invoke(command, ["--new-k", "4"]).output == "k=4\n"
    both = CliRunner().invoke(command, ["--old-k", "3", "--new-k", "4"])
    assert both.exit_code == 2 and "give --new-k only" in both.output
    assert "--old-k" not in CliRunner().invoke(command, ["--help"]).output


def test_the_svd_choices_are_linalgs():
    from lorascope.cli.options import SVD_CHOICES
    from lorascope.linalg import SVD_METHODS

    assert sorted(SVD_CHOICES) == sorted(SVD_METHODS)
    for cmd in ("sweep", "select", "compare", "intruders"):
        from lorascope.cli import main

        help_text = CliRunner().invoke(main, [cmd, "--help"]).output
        assert "--svd [auto|exact|randomized]" in help_text, cmd
