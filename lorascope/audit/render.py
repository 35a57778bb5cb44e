"""Terminal output of the audit: the ``params`` result, the adapter audit and the claims table (rich)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from .claims import FIGURE_LABELS, ClaimCheck, format_figure
from .claims_file import claim_notes
from .numbers import both, exact, format_ranges, human_bytes
from .params import AdapterResult, ParamsResult

SHAPES_WORDS = {"hf": "transformers on the meta device", "rules": "lorascope's shape rules",
                "headers": "checkpoint headers"}
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "note": "cyan"}


def _console(console: Any | None):
    import sys

    from rich.console import Console

    # piped output gets room for the module-type column instead of rich's 80-column default
    return console or Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)


def _table(*columns: str, title: str | None = None):
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, justify="left" if c in ("module type", "part", "figure", "target", "verdict", "explanation",
                                                 "layers", "name") else "right")
    return t


def layer_runs(by_layer: pd.DataFrame) -> list[tuple[str, int, int]]:
    """Consecutive layers with the same modules and parameters, as ('0–31', modules, params each)."""
    runs: list[list[Any]] = []
    for r in by_layer.itertuples():
        layer = None if pd.isna(r.layer) else int(r.layer)
        if runs and layer is not None and runs[-1][1] is not None and runs[-1][1] == layer - 1 \
                and runs[-1][2:] == [r.modules, r.params]:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer, r.modules, r.params])
    out = []
    for first, last, modules, params in runs:
        label = "outside layers" if first is None else (str(first) if first == last else f"{first}–{last}")
        out.append((label, int(modules), int(params)))
    return out


def print_params(result: ParamsResult, console: Any | None = None) -> None:
    con = _console(console)
    c, m = result.count, result.model
    tied = ", ".join(f"{t.name} = {t.tied_to}" for t in m.tied) or "none"
    con.print(f"[bold]source[/]  {result.source}")
    con.print(f"[bold]model[/]   {m.arch} · {m.head} · shapes from {SHAPES_WORDS.get(m.shapes_from, m.shapes_from)}")
    con.print(f"        {both(c.total)} parameters (tied weights once) · {m.num_layers} layers · d={m.hidden} · "
              f"tied: {tied}")
    s = c.settings
    extras = [f"layers {format_ranges(s.layers)}" if s.layers else "", "DoRA" if s.dora else "",
              f"rank_pattern {dict(s.rank_pattern)}" if s.rank_pattern else "",
              f"bias={s.bias}" if s.bias != "none" else "",
              f"modules_to_save {list(s.modules_to_save)}" if s.modules_to_save else ""]
    con.print(f"[bold]LoRA[/]    r={s.rank} · alpha={s.alpha:g} · targets {c.match.resolved.label} → {len(c.table)} modules"
              + "".join(f" · {e}" for e in extras if e))
    for w in result.warnings:
        con.print(f"[yellow]warning:[/] {w}")
    for note in m.notes:
        con.print(f"[cyan]note:[/] {note}")
    _print_matched(con, c)
    t = _table("module type", "modules", "shape (out×in)", "r", "params each", "params")
    for r in c.by_type().itertuples():
        each = r.params // r.modules if r.modules else 0
        t.add_row(r.module_type, str(r.modules), f"{r.rows}×{r.cols}", str(r.r), exact(each), exact(r.params))
    con.print(t)
    t = _table("layers", "modules", "params per layer")
    for label, modules, params in layer_runs(c.by_layer()):
        t.add_row(label, str(modules), exact(params))
    con.print(t)
    parts = [f"LoRA {exact(c.lora)}"] + [f"{k} {exact(v)}" for k, v in
                                          (("DoRA magnitude", c.magnitude), ("bias", c.bias), ("modules_to_save", c.saved)) if v]
    con.print(f"[bold]trainable[/] {both(c.trainable)}  ({' + '.join(parts)})")
    con.print(f"          {c.percent:.4g} % of the model's {both(c.total)}; PEFT's print_trainable_parameters shows "
              f"{c.peft_percent:.4g} % (of {exact(c.peft_total)}, adapter included)")
    con.print(f"[bold]adapter file[/] {exact(result.file_bytes)} bytes ({human_bytes(result.file_bytes)}) as "
              f"{result.dtype} safetensors")
    _print_memory(con, result)
    if result.claim is not None:
        print_claim(result.claim, con)


def _print_matched(con: Any, c) -> None:
    owners: dict[str, list[str]] = {}
    for target, names in c.match.by_target.items():
        for n in names:
            owners.setdefault(n, []).append(target)
    shapes = {m.name: m.shape for m in c.model.modules} | {p.name: p.shape for p in c.model.parameters}
    con.print("[bold]matched[/]")
    for kind, names in c.match.groups().items():
        ts = sorted({t for n in names for t in owners.get(n, [])})
        via = f"  ← {', '.join(ts)}" if ts and ts != ["all-linear"] else ""
        param = " (parameter)" if names[0] in c.match.parameters else ""
        con.print(f"  {kind} ×{len(names)}  {'×'.join(map(str, shapes[names[0]]))}{param}{via}")
    for target, names in c.match.by_target.items():
        if target == "all-linear" or target == c.match.resolved.regex:
            continue  # meant to reach many types; a name reaching several is the surprise worth a note
        kinds = sorted({k for k, ns in c.match.groups().items() if set(ns) & set(names)})
        if len(kinds) > 1:
            con.print(f"  [cyan]note:[/] target {target!r} matches {len(kinds)} module types: {', '.join(kinds)}")
    for target in c.match.unmatched:
        con.print(f"  [bold red]target {target!r} matched NOTHING[/]")


def _print_memory(con: Any, result: ParamsResult) -> None:
    t = _table("part", "LoRA", "full fine-tuning", title="training memory (no activations)")
    for r in result.memory.itertuples():
        t.add_row(r.part, human_bytes(r.lora), human_bytes(r.full))
    con.print(t)
    for line in result.assumptions.lines():
        con.print(f"  [dim]assumes: {line}[/]")


def print_claim(check: ClaimCheck, console: Any | None = None) -> None:
    con = _console(console)
    t = _table("figure", "claimed", "exact", "error", "verdict", title=f"claim (tolerance {check.figures[0].tolerance:.1%})")
    for f in check.figures:
        style = "green" if f.ok else "bold red"
        t.add_row(FIGURE_LABELS[f.figure], format_figure(f.figure, f.claimed), format_figure(f.figure, f.exact),
                  f"{f.error:+.2%}", f"[{style}]{f.verdict}[/]")
    con.print(t)
    for f in check.figures:
        if f.explanation is not None:
            e = f.explanation
            con.print(f"  {FIGURE_LABELS[f.figure]}: {e.text} (claim within {e.error:.2%})")
            for other in e.also:
                con.print(f"    [dim]also consistent: {other}[/]")
        elif not f.ok:
            con.print(f"  {FIGURE_LABELS[f.figure]}: no common mistake changes this figure")


def print_adapter(result: AdapterResult, console: Any | None = None) -> None:
    con = _console(console)
    a = result.audit
    cfg = a.config
    con.print(f"[bold]adapter[/] {result.source}")
    con.print(f"        r={cfg.get('r')} · alpha={cfg.get('lora_alpha')} · targets {cfg.get('target_modules')} · "
              f"task {cfg.get('task_type')} · base {cfg.get('base_model_name_or_path')}")
    t = _table("target", "module types reached")
    for target, types in a.targets.items():
        reached = ", ".join(f"{k} ×{n}" for k, n in types.items()) or "[bold red]NOTHING[/]"
        t.add_row(target, reached)
    con.print(t)
    t = _table("module type", "modules", "shape (out×in)", "tensor rank", "config r", "actual", "configured")
    for kind, g in a.modules.groupby("module_type", sort=False):
        ranks = sorted(set(g["tensor_rank"]))
        t.add_row(kind, str(len(g)), f"{g['rows'].iloc[0]}×{g['cols'].iloc[0]}", ",".join(map(str, ranks)),
                  ",".join(map(str, sorted(set(g["r"])))), exact(g["actual"].sum()), exact(g["configured"].sum()))
    con.print(t)
    con.print(f"[bold]LoRA parameters[/] actual {both(a.actual)} · configured {both(a.configured)}"
              + ("" if a.actual == a.configured else "  [bold red]differ[/]"))
    if not a.saved.empty:
        con.print(f"[bold]full tensors[/] {both(a.saved_params)} parameters in {len(a.saved)} tensors "
                  f"({human_bytes(int(a.saved['bytes'].sum()))})")
    con.print(f"[bold]trainable[/] {both(a.trainable)}")
    if a.model_count is not None:
        con.print(f"[bold]on the base model[/] ({both(a.model_total)} parameters): the config creates "
                  f"{both(a.model_count.trainable)} trainable; the adapter holds {100 * a.trainable / a.model_total:.4g} % "
                  "of the model")
    for f in a.findings:
        con.print(f"[{SEVERITY_STYLE[f.severity]}]{f.severity}:[/] {f.message}")
    if not a.findings:
        con.print("[green]no findings[/]")
    if result.claim is not None:
        print_claim(result.claim, con)


def print_claims_table(table: pd.DataFrame, console: Any | None = None) -> None:
    con = _console(console)
    t = _table("name", "figure", "claimed", "exact", "error", "verdict", "explanation")
    for r in table.itertuples():
        style = {"ok": "green", "wrong": "bold red"}.get(r.verdict, "yellow")
        err = "" if pd.isna(r.relative_error) else f"{r.relative_error:+.2%}"
        t.add_row(r.name, r.figure, r.claimed_text, r.exact_text, err, f"[{style}]{r.verdict}[/]", r.explanation or "")
    con.print(t)
    for name, note in claim_notes(table):
        con.print(f"[yellow]note[/] {name}: {note}")
