"""Options several commands share, spelled one way: ``--svd`` (how a dense top-k is computed, the choice
``lorascope.linalg.svd`` makes), the input formats (``format_option``), and old spellings that still work — a
hidden option under the old name that says what it is now called and hands its value to the new one
(``renamed`` with ``takes_renamed`` on the new option).
"""

from __future__ import annotations

import click

SVD_CHOICES = [
    "auto",
    "exact",
    "randomized",
]  # lorascope.linalg.SVD_METHODS (kept here: --help imports no numpy)

# lorascope.checkpoint.FORMATS' names (kept here: --help imports no numpy; a test holds the two equal)
FORMAT_CHOICES = [
    "auto",
    "safetensors",
    "torch",
    "hf",
    "peft",
    "gguf",
    "kohya",
    "diffusers",
    "lora-ab",
    "cloneofsimo",
]


def format_option(*names: str, help: str):
    """An input's format (``lorascope.checkpoint.open_checkpoint``'s ``format``), 'auto' by default: detected
    from content."""
    return click.option(
        *names, type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True, help=help
    )


def svd_option(default: str, what: str, **extra):
    """``--svd``: how a dense top-k is computed (``lorascope.linalg.svd``),
    the same choices in every command."""
    return click.option(
        "--svd",
        type=click.Choice(SVD_CHOICES),
        default=default,
        show_default=True,
        help=f"{what}: 'exact' (every value), 'randomized' (the top k by a randomized range "
        "finder, faster) or 'auto' (randomized where k ≤ 10 % of min(m, n)).",
        **extra,
    )


def renamed(old: str, new: str, dest: str, choices: list[str] | None = None):
    """A hidden option spelled as ``old`` was, which says it is now ``new`` and passes its value on to it."""

    def stash(ctx: click.Context, param: click.Parameter, value):
        if value is not None:
            click.echo(
                f"{old} is now {new} (the old spelling will be removed); using {new} {value}.", err=True
            )
            ctx.meta[f"renamed:{dest}"] = value

    return click.option(
        old,
        f"_old_{dest}",
        hidden=True,
        default=None,
        expose_value=False,
        callback=stash,
        type=click.Choice(choices) if choices else click.IntRange(min=1),
    )


def takes_renamed(ctx: click.Context, param: click.Parameter, value):
    """The value of the new option, or of its old spelling when only that was given."""
    old = ctx.meta.get(f"renamed:{param.name}")
    if old is None:
        return value
    if ctx.get_parameter_source(param.name) is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError(f"give --{param.name.replace('_', '-')} only, not also its old spelling.")
    return old
