"""Trainer runs as a report reads them: what each run reached on its task, what it forgot, how its rank grew.

A trainer run folder (``lorascope.train.runs``) declares everything shown here: ``metrics.json`` (method,
rank, target set, trainable parameters, the base model's and the final evaluation), ``history.csv``
(evaluations during training) and ``rank_history.csv`` (every ``rank_every`` steps, each trained matrix's
entropy_rank, rank_90 and ‖ΔW‖_F). A spectrum results folder leads to its run through the input it analyzed,
as its ``summary.json`` records it: the run's ``adapter/`` or ``tuned/``.

Reading the folders is ``read_run``, ``run_of_results`` and ``runs_of_sweep``; everything else is pure: lists
of ``TrainedRun`` in, DataFrames and sentences out. Metric names are the trainer's: ``<set>_acc`` and
``<set>_loss`` per evaluation set in the task's order (the first is what the run was trained to change, e.g.
``edit``), ``eval_loss`` pooled over all sets; sets named ``retain*`` hold what the base knew and the
fine-tune should keep (``lorascope.train.data``).

The reading is ``trained_runs.py``'s and the pure tables and sentences ``trained_outcomes.py``'s; every name
stays importable from here.
"""

from __future__ import annotations

from .trained_runs import (
    HISTORY_CSV as HISTORY_CSV,
    INDEX_CSV as INDEX_CSV,
    NO_RANK as NO_RANK,
    POOLED_LOSS as POOLED_LOSS,
    RANK_HISTORY_CSV as RANK_HISTORY_CSV,
    RETAIN_PREFIX as RETAIN_PREFIX,
    RUN_METRICS as RUN_METRICS,
    TrainedRun as TrainedRun,
    is_run_folder as is_run_folder,
    read_run as read_run,
    run_of_results as run_of_results,
    runs_of_sweep as runs_of_sweep,
)
from .trained_outcomes import (
    answer_lines as answer_lines,
    group_of as group_of,
    groups as groups,
    kept_shares as kept_shares,
    knee_table as knee_table,
    lower_is_better as lower_is_better,
    metric_title as metric_title,
    outcome_from_index as outcome_from_index,
    outcome_metrics as outcome_metrics,
    outcome_table as outcome_table,
    primary_metric as primary_metric,
    rank_evolution as rank_evolution,
    references as references,
    retention_sets as retention_sets,
    smallest_rank_reaching as smallest_rank_reaching,
)
