"""The ``lorascope`` command: a click group whose commands are thin shells over library functions.

Commands are imported only when invoked, so ``lorascope --help`` starts without torch. Exit codes:

- 0: done. A closed stdout (``lorascope … | head``) is not an error: output is dropped from then on and the
  command finishes its work quietly.
- 2: bad input — a ``LorascopeError``, one paragraph on stderr naming the file, key or value, never a
  traceback.
- 1: anything else, as one paragraph; the traceback only when ``LORASCOPE_DEBUG`` is 1, true, yes or on.
- 130: interrupted (Ctrl-C).

Notes an error carries (``lorascope.outputs``: "the folder was left as it was") are printed after it.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from ..errors import LorascopeError

# command name -> "module:attribute" of its click command
COMMANDS = {
    "spectrum": "lorascope.cli.spectrum:spectrum",
    "sweep": "lorascope.cli.sweep:sweep",
    "select": "lorascope.cli.select:select",
    "report": "lorascope.cli.report:report",
    "compare": "lorascope.cli.compare:compare",
    "intruders": "lorascope.cli.compare:intruders",
    "params": "lorascope.cli.audit:params",
    "audit": "lorascope.cli.audit:audit",
    "train": "lorascope.cli.train:train",
    "train-sweep": "lorascope.cli.train:train_sweep",
    "demo": "lorascope.cli.train:demo",
}


def debug_enabled() -> bool:
    """Whether ``LORASCOPE_DEBUG`` asks for tracebacks: 1, true, yes or on (any case); 0, false, empty do
    not."""
    return os.environ.get("LORASCOPE_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


class QuietPipe:
    """A stdout that, once the reader has gone (EPIPE), drops further output instead of failing the
    command."""

    def __init__(self, stream: Any):
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def _gone(self) -> None:
        self.broken = True
        try:  # later writes of anything still holding the real descriptor go nowhere, at exit too
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _with_notes(exc: BaseException) -> str:
    return " ".join([str(exc), *map(str, getattr(exc, "__notes__", None) or [])])


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        keep_freed_memory()
        if not isinstance(sys.stdout, QuietPipe):
            sys.stdout = QuietPipe(sys.stdout)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        from ._common import emit_error, reset_json, start_json

        reset_json()
        raw = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if raw and raw[0] in COMMANDS and "--json" in raw[1 : raw.index("--") if "--" in raw else None]:
            start_json(raw[0])  # before parsing, so that a usage error is a JSON document too
        try:
            return super().invoke(ctx)
        except LorascopeError as exc:
            emit_error(_with_notes(exc), 2)
            click.secho(f"error: {_with_notes(exc)}", err=True, fg="red")
            sys.exit(2)
        except KeyboardInterrupt as exc:
            notes = " ".join(getattr(exc, "__notes__", None) or [])
            emit_error(f"interrupted. {notes}".strip(), 130)
            click.secho(f"interrupted. {notes}".strip(), err=True, fg="red")
            sys.exit(130)
        except click.exceptions.ClickException as exc:
            emit_error(exc.format_message(), exc.exit_code)
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            if isinstance(sys.stdout, QuietPipe):
                sys.stdout._gone()
            sys.exit(0)
        except Exception as exc:  # noqa: BLE001 - the backstop: one paragraph, never a traceback
            if debug_enabled():
                raise
            emit_error(f"unexpected {type(exc).__name__}: {_with_notes(exc)}", 1)
            click.secho(
                f"error: unexpected {type(exc).__name__}: {_with_notes(exc)} lorascope did not expect this "
                "input or state. Run again with LORASCOPE_DEBUG=1 to see the traceback, and report it with "
                "the command that caused it.",
                err=True,
                fg="red",
            )
            sys.exit(1)


def keep_freed_memory(mmap_threshold: int = 16 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Let glibc keep freed blocks in the heap rather than hand them back to the kernel at once.

    An analysis allocates and frees a few MiB per module (float64 copies of its factors); with glibc's
    default, growing thresholds every module's arrays are faulted in anew, about 0.15 s of kernel time for a
    224-module adapter (``benchmarks/adapter_spectrum.py``). Blocks under ``mmap_threshold`` bytes come from
    the heap, and up to ``trim_threshold`` bytes of free heap are kept (``mallopt`` M_MMAP_THRESHOLD and
    M_TRIM_THRESHOLD, glibc's malloc(3)); larger arrays (streamed full-diff blocks) are still mapped and
    returned when freed. Only the command-line process does this: the library leaves its host's allocator
    alone. Returns whether glibc took both settings (False off glibc).
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError, TypeError):  # not glibc (musl, macOS, Windows): nothing to set
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, mmap_threshold)) and bool(mallopt(m_trim_threshold, trim_threshold))


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="lorascope")
def main() -> None:
    """lorascope: what a fine-tune changed, and how much rank it needed."""
    import warnings

    from ..checkpoint.hub import HubNotice

    warnings.filterwarnings("ignore", category=HubNotice)  # each command prints its inputs' notes itself
