"""The ``lorascope`` command: a click group whose commands are thin shells over library functions.

Commands are imported only when invoked, so ``lorascope --help`` starts without torch. Every
``LorascopeError`` (bad input) ends as one clear paragraph on stderr and exit code 2, never a traceback;
any other exception ends as one paragraph and exit code 1 (``LORASCOPE_DEBUG=1`` shows its traceback).
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ..errors import LorascopeError

# command name -> "module:attribute" of its click command
COMMANDS = {
    "spectrum": "lorascope.cli.spectrum:spectrum",
    "sweep": "lorascope.cli.rank:sweep",
    "select": "lorascope.cli.rank:select",
    "report": "lorascope.cli.report:report",
    "compare": "lorascope.cli.compare:compare",
    "intruders": "lorascope.cli.compare:intruders",
    "params": "lorascope.cli.audit:params",
    "audit": "lorascope.cli.audit:audit",
    "train": "lorascope.cli.train:train",
    "train-sweep": "lorascope.cli.train:train_sweep",
    "demo": "lorascope.cli.train:demo",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LorascopeError as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted", err=True, fg="red")
            sys.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the backstop: one paragraph, never a traceback
            if os.environ.get("LORASCOPE_DEBUG"):
                raise
            click.secho(
                f"error: unexpected {type(exc).__name__}: {exc}. lorascope did not expect this input or state; "
                "nothing further was written. Run again with LORASCOPE_DEBUG=1 to see the traceback, and report it "
                "with the command that caused it.", err=True, fg="red")
            sys.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lorascope")
def main() -> None:
    """lorascope: what a fine-tune changed, and how much rank it needed."""
