"""The short terminal summary printed after an analysis (rich tables on stdout)."""

from __future__ import annotations

import pandas as pd

from ..names import module_type
from ..results import Results


def module_type_table(modules: pd.DataFrame) -> pd.DataFrame:
    """Per module type: count and medians of entropy_rank, rank_90 and relative_update (or fro_norm)."""
    df = modules.assign(type=modules["module"].map(module_type))
    size = "relative_update" if df["relative_update"].notna().any() else "fro_norm"
    agg = df.groupby("type", sort=False).agg(
        n=("name", "size"),
        r=("lora_rank", "median"),
        entropy_rank=("entropy_rank", "median"),
        rank_90=("rank_90", "median"),
        **{size: (size, "median")},
    )
    return agg


def print_summary(results: Results, top: int = 10) -> None:
    from rich.console import Console
    from rich.table import Table

    import sys

    console = Console(width=None if sys.stdout.isatty() else 120)  # logs and pipes get room for module names
    m = results.modules
    s = results.summary
    console.print(
        f"[bold]{len(m)} modules[/] analyzed ({s.get('kind')}) in {s['timing']['total_seconds']:.1f} s"
    )
    if m.empty:
        return
    agg = module_type_table(m)
    table = Table(title="Median per module type", title_justify="left")
    for col in ["module type", *agg.columns]:
        table.add_column(col, justify="left" if col == "module type" else "right")
    for name, row in agg.iterrows():
        table.add_row(str(name), *(_fmt(v) for v in row))
    console.print(table)

    size = "relative_update" if m["relative_update"].notna().any() else "fro_norm"
    largest = m.nlargest(min(top, len(m)), size)
    table = Table(title=f"{len(largest)} largest updates by {size}", title_justify="left")
    for col in ("name", size, "entropy_rank", "rank_90", "stable_rank"):
        table.add_column(col, justify="left" if col == "name" else "right", overflow="fold")
    for _, row in largest.iterrows():
        table.add_row(row["name"], *(_fmt(row[c]) for c in (size, "entropy_rank", "rank_90", "stable_rank")))
    console.print(table)

    warnings = s.get("warnings", [])
    if warnings:
        console.print(f"[yellow]{len(warnings)} warning(s)[/] (all of them are in summary.json):")
        for w in warnings[:8]:
            console.print(f"  [yellow]•[/] {w['name']}: {w['reason']}")
        if len(warnings) > 8:
            console.print(f"  … and {len(warnings) - 8} more")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)
