"""The numbers a report shows, derived from saved results: pure functions of the modules table and spectra.

Nothing here reads files, draws or formats: DataFrames and arrays in, DataFrames and arrays out.
Figures (``figures.py``) and sections (``sections.py``) are built from these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..metrics import ENERGY_LEVELS, energy  # noqa: F401 - ENERGY_LEVELS: the levels the figures mark
from ..names import module_type
from ..rank.spectra import complete_spectrum, spectra_from
from ..rank.sweep import UniformSweep, sweep_ks, uniform_sweep


SIZE_UNITS = {
    "relative_update": "relative update ‖ΔW‖ / ‖W_base‖",
    "fro_norm": "‖ΔW‖ (Frobenius, weight units)",
}


def numeric(values: pd.Series) -> pd.Series:
    """A column as float64 with NaN for missing values: nullable Int64 columns (a rank beyond a randomized
    top-k is <NA>) and text become plain floats, so reductions give NaN instead of pd.NA."""
    return pd.to_numeric(values, errors="coerce").astype("float64")


def median(values: pd.Series) -> float:
    """The median of the known values of a column, NaN when none is known (every rank beyond a top-k)."""
    return float(numeric(values).median())


def size_column(modules: pd.DataFrame) -> str:
    """The magnitude column to show: relative_update where a base was given, else fro_norm."""
    if "relative_update" in modules and modules["relative_update"].notna().any():
        return "relative_update"
    return "fro_norm"


def zero_updates(modules: pd.DataFrame) -> pd.DataFrame:
    """Modules whose ΔW is exactly zero (‖ΔW‖_F = 0: a matrix the fine-tune did not train, such as the frozen
    blocks of a layer-freezing run). Their ranks are 0 by definition, so statistics leave them out."""
    return modules[numeric(modules["fro_norm"]) == 0]


def updated(modules: pd.DataFrame) -> pd.DataFrame:
    """Modules with a non-zero ΔW (or an unknown norm): what medians, bands and heatmaps summarize."""
    return modules[~(numeric(modules["fro_norm"]) == 0)]


def name_list(names: list[str], most: int = 6) -> str:
    """'a, b, c and 19 more': a readable list of module names."""
    names = list(names)
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])} and {len(names) - most} more"


def with_types(modules: pd.DataFrame) -> pd.DataFrame:
    """The modules table plus a ``type`` column (``module_type`` of ``module``: experts and blocks group)."""
    names = modules["module"].astype(str)
    types = {name: module_type(name) for name in names.unique()}  # a few module names over many layers
    return modules.assign(type=names.map(types))


def type_order(modules: pd.DataFrame) -> list[str]:
    """Module types in model order: by the first layer they appear in, then by first appearance."""
    df = with_types(modules)
    layer = np.nan_to_num(layer_values(df), nan=np.inf)
    first = pd.DataFrame({"type": df["type"].to_numpy(), "layer": layer, "pos": np.arange(len(df))})
    key = first.groupby("type", sort=False).agg(layer=("layer", "min"), pos=("pos", "min"))
    return list(key.sort_values(["layer", "pos"]).index)


def layer_values(modules: pd.DataFrame) -> np.ndarray:
    """The layer column as float64, NaN where a module has no layer (the column is a nullable Int64)."""
    return (
        pd.to_numeric(modules["layer"], errors="coerce")
        .astype("Float64")
        .to_numpy(dtype=np.float64, na_value=np.nan)
    )


def short_labels(types: list[str], width: int = 24) -> dict[str, str]:
    """Display labels for module types: '*' components dropped, and paths longer than ``width`` cut to
    their first component and last two ('attentions…attn1.to_q'); longer forms where labels would clash."""

    def forms(t: str) -> list[str]:
        parts = [p for p in t.split(".") if p != "*"] or [t]
        joined = ".".join(parts)
        short = parts[0] + "…" + ".".join(parts[-2:]) if len(joined) > width and len(parts) > 3 else joined
        return [short, joined, t]

    labels = {t: forms(t)[0] for t in types}
    for level in (1, 2):
        counts = pd.Series(list(labels.values())).value_counts()
        labels = {t: forms(t)[level] if counts[label] > 1 else label for t, label in labels.items()}
    return _capped(labels, LABEL_LIMIT)


LABEL_LIMIT = 40  # characters: the longest module-type label a figure's tick, title or legend shows


def _capped(labels: dict[str, str], limit: int) -> dict[str, str]:
    """Labels longer than ``limit`` characters cut in the middle ('model_a_very…ong_name_q_proj'), so that
    no figure has to make room for a 200-character name; cut labels that would clash are numbered."""

    def cut(label: str) -> str:
        if len(label) <= limit:
            return label
        head = (limit - 1) // 2
        return label[:head] + "…" + label[len(label) - (limit - 1 - head) :]

    out = {t: cut(label) for t, label in labels.items()}
    counts = pd.Series(list(out.values()), dtype=object).value_counts()
    seen: dict[str, int] = {}
    for t, label in out.items():
        if counts[label] > 1 and label != labels[t]:
            seen[label] = seen.get(label, 0) + 1
            tag = f" #{seen[label]}"
            out[t] = cut(labels[t])[: limit - len(tag)] + tag
    return out


def layered(modules: pd.DataFrame) -> pd.DataFrame:
    """Modules that have a layer index (the rest are embeddings, heads and other one-off matrices)."""
    return modules[modules["layer"].notna()]


def unlayered(modules: pd.DataFrame) -> pd.DataFrame:
    """Modules with no layer index (lm_head, embeddings …), which layer × type grids cannot place."""
    return modules[modules["layer"].isna()]


@dataclass(frozen=True)
class Grid:
    """One metric on a layer × module type grid; ``counts`` says how many modules each cell averages."""

    metric: str
    values: pd.DataFrame  # index: layer (ascending), columns: module types in model order; NaN = no module
    counts: pd.DataFrame

    @property
    def averaged_cells(self) -> int:
        return int((self.counts > 1).to_numpy().sum())


def layer_grid(modules: pd.DataFrame, metric: str, types: list[str] | None = None) -> Grid:
    """The mean of ``metric`` per (layer, module type); several modules in one cell (diffusion blocks,
    experts) are averaged, modules without a layer are left out (see ``unlayered``)."""
    df = with_types(layered(modules))
    types = types or type_order(df)
    values = pd.to_numeric(df[metric], errors="coerce").astype("float64")
    frame = pd.DataFrame({"layer": df["layer"].astype("int64"), "type": df["type"], "v": values})
    layers = sorted(frame["layer"].unique())
    mean = frame.pivot_table(index="layer", columns="type", values="v", aggfunc="mean", dropna=False)
    count = frame.pivot_table(index="layer", columns="type", values="v", aggfunc="size", fill_value=0)
    mean = mean.reindex(index=layers, columns=types)
    count = count.reindex(index=layers, columns=types).fillna(0).astype(int)
    return Grid(metric, mean, count)


def run_type_grid(tables: Mapping[str, pd.DataFrame], metric: str, types: list[str]) -> Grid:
    """The median of ``metric`` per (run, module type) over the type's modules: rows are the runs in order,
    columns the module types; NaN where a run has no module of that type."""
    values, counts = {}, {}
    for label, modules in tables.items():
        df = with_types(modules)
        v = numeric(df[metric])
        values[label] = {t: float(v[df["type"] == t].median()) for t in types}
        counts[label] = {t: int((df["type"] == t).sum()) for t in types}
    frame = pd.DataFrame.from_dict(values, orient="index").reindex(index=list(tables), columns=types)
    count = pd.DataFrame.from_dict(counts, orient="index").reindex(index=list(tables), columns=types)
    count = count.fillna(0)
    return Grid(metric, frame.astype("float64"), count.astype(int))


def type_summary(modules: pd.DataFrame, types: list[str]) -> pd.DataFrame:
    """Per module type: count, nominal r, median and range of entropy_rank and rank_90, median magnitude."""
    df = with_types(modules)
    size = size_column(modules)
    rows = []
    for t in types:
        g = df[df["type"] == t]
        row = {"module type": t, "modules": len(g), "r": ranks_text(g["lora_rank"])}
        for col in ("entropy_rank", "rank_90"):
            v = numeric(g[col]).dropna()
            row[f"{col} median"] = median(v)
            row[f"{col} range"] = _range_text(v)
        row[f"{size} median"] = median(g[size])
        rows.append(row)
    return pd.DataFrame(rows)


def rank_use(modules: pd.DataFrame, types: list[str]) -> pd.DataFrame:
    """For adapters, per module type: nominal r beside the ranks the update actually uses (medians)."""
    df = with_types(modules[modules["lora_rank"].notna()])
    rows = []
    for t in types:
        g = df[df["type"] == t]
        if g.empty:
            continue
        r = numeric(g["lora_rank"])
        med = {c: median(g[c]) for c in ("rank_90", "rank_99", "numerical_rank", "gd_rank", "entropy_rank")}
        rows.append(
            {
                "module type": t,
                "modules": len(g),
                "nominal r": ranks_text(g["lora_rank"]),
                **med,
                "rank_99 / r": median(numeric(g["rank_99"]) / r),
            }
        )
    return pd.DataFrame(rows)


def largest(modules: pd.DataFrame, column: str, n: int = 10) -> pd.DataFrame:
    """The ``n`` modules with the largest ``column``, descending."""
    cols = ["name", column, "entropy_rank", "rank_90", "stable_rank"]
    df = modules.assign(**{column: pd.to_numeric(modules[column], errors="coerce")})
    return df.dropna(subset=[column]).nlargest(min(n, len(df)), column)[cols]


def ranks_text(ranks: pd.Series) -> str:
    vals = sorted({int(v) for v in ranks.dropna()})
    if not vals:
        return ""
    return ", ".join(map(str, vals)) if len(vals) <= 3 else f"{vals[0]}–{vals[-1]}"


def _range_text(values: pd.Series) -> str:
    if values.empty:
        return ""
    lo, hi = float(values.min()), float(values.max())
    return f"{lo:.3g}–{hi:.3g}" if lo != hi else f"{lo:.3g}"


# ---- curves per module -------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One module's values against index i = 1..len(y), with the layer used for its colour."""

    name: str
    layer: float  # NaN where the module has no layer
    y: np.ndarray


def spectra_by_type(
    modules: pd.DataFrame, spectra: Mapping[str, np.ndarray], types: list[str]
) -> dict[str, list[Curve]]:
    """σ_i of every module, grouped by module type, in layer order."""
    return _curves(modules, types, lambda row: np.asarray(spectra.get(row["name"], ()), dtype=np.float64))


def energy_by_type(
    modules: pd.DataFrame, spectra: Mapping[str, np.ndarray], types: list[str]
) -> dict[str, list[Curve]]:
    """energy(k) of every module against ‖ΔW‖_F² (docs/METRICS.md 'energy(k)'), grouped by module type.

    The total is the stored fro_norm, so a truncated (top-k) spectrum ends below 1 instead of faking it.
    """

    def curve(row: Mapping) -> np.ndarray:
        s = np.asarray(spectra.get(row["name"], ()), dtype=np.float64)
        fro = row["fro_norm"]
        return energy(s, None if pd.isna(fro) else float(fro) ** 2)

    return _curves(modules, types, curve)


def _curves(modules: pd.DataFrame, types: list[str], values) -> dict[str, list[Curve]]:
    df = with_types(modules)
    df = df.assign(_layer=layer_values(df))
    out: dict[str, list[Curve]] = {t: [] for t in types}
    for row in df.sort_values("_layer", kind="stable").to_dict("records"):
        if row["type"] in out:
            y = values(row)
            if y.size:
                out[row["type"]].append(Curve(row["name"], float(row["_layer"]), y))
    return out


def nominal_ranks(modules: pd.DataFrame, types: list[str]) -> dict[str, list[int]]:
    """The distinct adapter ranks r of each module type (empty for dense updates)."""
    df = with_types(modules)
    return {t: sorted({int(v) for v in df.loc[df["type"] == t, "lora_rank"].dropna()}) for t in types}


# ---- uniform-rank sweep ------------------------------------------------------------------------


Sweep = UniformSweep  # the uniform sweep is computed in lorascope.rank.sweep; the report only renders it
_sweep_ks = sweep_ks


def truncated_modules(modules: pd.DataFrame, spectra: Mapping[str, np.ndarray]) -> list[str]:
    """Modules whose stored σ are a top-k (``rank.spectra.complete_spectrum``: a randomized method, a rank
    beyond k, or Σσ² short of ‖ΔW‖_F²)."""
    return [
        str(rec["name"])
        for rec in modules.to_dict("records")
        if not complete_spectrum(rec, np.asarray(spectra.get(rec["name"], ()), dtype=np.float64))
    ]


def uniform_rank_sweep(
    modules: pd.DataFrame, spectra: Mapping[str, np.ndarray], max_points: int = 400
) -> Sweep:
    """The uniform-rank sweep of the modules that have a stored spectrum (``rank.sweep.uniform_sweep``)."""
    have = {n: s for n, s in spectra.items() if len(s)}
    return uniform_sweep(spectra_from(modules, have), max_points)


def sweep_milestones(sweep: Sweep) -> pd.DataFrame:
    """The sweep at k = 1, 2, 4, 8 … (and the last k): a short table to read exact values from."""
    t = sweep.table
    if t.empty:
        return t
    k_max = int(t["k"].max())
    wanted = set(2 ** np.arange(int(np.log2(k_max)) + 1)) | {k_max}
    return t[t["k"].isin(wanted)].reset_index(drop=True)


def actual_adapter_parameters(modules: pd.DataFrame) -> int | None:
    """Σ r·(rows + cols) over adapter modules, or None for dense updates."""
    a = modules[modules["lora_rank"].notna()]
    if a.empty:
        return None
    return int((a["lora_rank"].astype("int64") * (a["rows"] + a["cols"]).astype("int64")).sum())


# ---- comparisons of several runs ---------------------------------------------------------------


def energy_band(
    curves: list[Curve], k_max: int, complete: set[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median and 25 / 75 % quantiles over modules of energy(k), k = 1..k_max.

    A complete spectrum (exactly zero past its stored values, e.g. a LoRA update) stays at its last
    value up to k_max; a truncated one is unknown past its end and left out there.
    """
    stack = np.full((len(curves), k_max), np.nan)
    for i, c in enumerate(curves):
        n = min(len(c.y), k_max)
        stack[i, :n] = c.y[:n]
        if c.name in complete and n < k_max:
            stack[i, n:] = c.y[n - 1]
    known = np.isfinite(stack).any(axis=0)
    q = np.full((3, k_max), np.nan)
    if known.any():
        q[:, known] = np.nanquantile(stack[:, known], [0.25, 0.5, 0.75], axis=0)
    return q[1], q[0], q[2]


def joined_table(tables: Mapping[str, pd.DataFrame], metrics: list[str]) -> pd.DataFrame:
    """One row per module name over all runs: name, layer, module, then ``<metric> · <run>`` columns."""
    keys = ["name", "layer", "module"]
    order = pd.concat([t[keys] for t in tables.values()]).drop_duplicates("name")
    order = (
        order.assign(_layer=layer_values(order)).sort_values("_layer", kind="stable").drop(columns="_layer")
    )
    joined = order.reset_index(drop=True)
    for metric in metrics:
        for label, t in tables.items():
            if metric in t:
                col = t.set_index("name")[metric]
                joined[f"{metric} · {label}"] = joined["name"].map(col)
    return joined


def common_size_column(tables: Mapping[str, pd.DataFrame]) -> str:
    """relative_update when every run has it (each had a base), else fro_norm."""
    return (
        "relative_update" if all(size_column(t) == "relative_update" for t in tables.values()) else "fro_norm"
    )
