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


def test_the_format_choices_are_the_formats_open_checkpoint_takes():
    from lorascope.checkpoint import FORMATS
    from lorascope.cli.options import FORMAT_CHOICES

    assert FORMAT_CHOICES == list(FORMATS)


def test_every_command_with_a_format_option_offers_the_same_choices():
    from lorascope.cli import COMMANDS, main
    from lorascope.cli.options import FORMAT_CHOICES

    seen = 0
    for name in COMMANDS:
        command = main.get_command(None, name)
        for param in command.params:
            if isinstance(param, click.Option) and any("format" in o for o in param.opts):
                if isinstance(param.type, click.Choice) and "auto" in param.type.choices:
                    assert list(param.type.choices) == FORMAT_CHOICES, (name, param.opts)
                    assert param.default == "auto"
                    seen += 1
    assert seen >= 9  # spectrum, sweep, select (2 each), compare (3), intruders (2)
