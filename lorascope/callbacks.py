"""Watch a training run with transformers: ``SpectrumCallback`` records adapter spectra every N steps.

The callback is a transformers ``TrainerCallback`` around ``record_spectra`` (``lorascope.training_record``),
which takes the exact spectrum of each adapter module of the PEFT model in training (``lorascope.snapshot``);
the headline numbers go into the trainer's logs, and so to TensorBoard, W&B or trackio through its own
reporters. The record's functions are importable from here too, as they always were.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .errors import LorascopeError
from .snapshot import HEADLINE_PREFIX, Module, Snapshot, adapter_modules, headline, snapshot
from .training_record import (
    TRAINING_CSV,
    clear_record,
    read_training,
    record_spectra,
    recorded_steps,
    training_spectrum,
)

__all__ = [
    "HEADLINE_PREFIX",
    "Module",
    "Snapshot",
    "SpectrumCallback",
    "TRAINING_CSV",
    "adapter_modules",
    "clear_record",
    "headline",
    "read_training",
    "record_spectra",
    "recorded_steps",
    "snapshot",
    "training_spectrum",
]

# ---- the transformers callback --------------------------------------------------------------------------

try:
    from transformers import TrainerCallback
except ImportError:  # record_spectra works without transformers; the callback needs it

    class TrainerCallback:  # type: ignore[no-redef]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise LorascopeError(
                "SpectrumCallback is a transformers TrainerCallback: pip install 'lorascope[hf]'."
            )


class SpectrumCallback(TrainerCallback):
    """A transformers ``TrainerCallback`` recording adapter spectra every ``every_n_steps`` optimizer steps.

    Records at the start of training, every N steps and at the end (``record_spectra``), on the main process
    only. A new run (global step 0) starts the record in ``out`` anew; a resumed run continues it. The
    headline numbers (``headline``) are added to the trainer's next logs, so every reporter that runs after
    this callback (TensorBoard, W&B, trackio, …) receives them, and to ``state.log_history``.
    ``attach(trainer)`` puts the callback before the trainer's reporters; a callback given as
    ``Trainer(callbacks=[…])`` runs after them and says so once.

        trainer = Trainer(model=peft_model, args=args, train_dataset=ds)
        SpectrumCallback(out="reports/run-spectra", every_n_steps=50).attach(trainer)
        trainer.train()

    Args:
        out: the results folder (``lorascope report OUT`` renders it).
        every_n_steps: record every this many optimizer steps.
        adapter: the adapter to record (default: the active one).
        log: add the headline numbers to the trainer's logs.
    """

    def __init__(
        self, out: str | Path, every_n_steps: int = 50, adapter: str | None = None, log: bool = True
    ):
        super().__init__()
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps!r}")
        self.out = Path(out)
        self.every_n_steps = every_n_steps
        self.adapter = adapter
        self.log = log
        self.pending: dict[str, float] = {}
        self.last_step: int | None = None
        self.attached = False
        self.seconds: list[float] = []  # wall time of each record, for the cost of watching

    def attach(self, trainer: Any) -> SpectrumCallback:
        """Add this callback to ``trainer`` ahead of its reporters, so they receive the headline numbers."""
        trainer.callback_handler.callbacks.insert(0, self)
        self.attached = True
        return self

    def _record(self, state: Any, model: Any) -> None:
        if not state.is_world_process_zero or model is None or state.global_step == self.last_step:
            return
        start = time.perf_counter()
        numbers = record_spectra(
            model,
            state.global_step,
            self.out,
            self.adapter,
            context={"epoch": state.epoch, "every_n_steps": self.every_n_steps},
        )
        self.seconds.append(time.perf_counter() - start)
        self.last_step = state.global_step
        self.pending = {**numbers, HEADLINE_PREFIX + "record_seconds": self.seconds[-1]}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        clear_record(self.out, after=state.global_step if state.global_step else -1)
        if self.log and not self.attached and _reporters(args):
            import warnings

            warnings.warn(
                f"SpectrumCallback runs after the trainer's reporters ({', '.join(_reporters(args))}), so "
                f"they do not receive its numbers (they are in {self.out / TRAINING_CSV} and "
                "trainer_state.json). Add it with SpectrumCallback(...).attach(trainer) to send them to the "
                "reporters too.",
                stacklevel=2,
            )
        self._record(state, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if state.global_step % self.every_n_steps == 0:
            self._record(state, model)
            if self.log and self.pending:
                control.should_log = True  # the numbers go out with this step's logs
        return control

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any
    ) -> None:
        if not self.log or not self.pending or logs is None:
            return
        logs.update(self.pending)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self.pending)
        self.pending = {}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._record(state, model)  # the final adapter, when the last step was not a multiple of N


def _reporters(args: Any) -> list[str]:
    report_to = getattr(args, "report_to", None) or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    return [r for r in report_to if r not in ("none", None)]
