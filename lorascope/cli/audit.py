"""`lorascope params` and `lorascope audit`: exact LoRA parameter counts, and claimed figures checked."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import (
    CHECKPOINT,
    check_out,
    default_out,
    emit,
    emit_error,
    json_option,
    records,
    resolve_input,
    wrote,
)

DTYPE_CHOICES = ["bf16", "fp16", "fp32", "fp8"]
LORA_OPTIONS = (
    "rank",
    "alpha",
    "targets",
    "layers",
    "rank_pattern",
    "dora",
    "bias",
    "modules_to_save",
    "ensure_weight_tying",
)


@click.command()
@click.argument("source", type=CHECKPOINT)
@click.option("--rank", "-r", type=click.IntRange(min=1), default=16, show_default=True, help="LoRA rank r.")
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, min_open=True),
    default=32,
    show_default=True,
    help="lora_alpha (does not change counts; used to spot 'alpha read as rank').",
)
@click.option(
    "--targets",
    "-t",
    default=None,
    help="q_proj,v_proj | attn | mlp | all-linear | a full-match REGEX  [default: PEFT's default for the "
    "architecture].",
)
@click.option(
    "--layers", default=None, help="Only these layers (PEFT layers_to_transform), e.g. 0-15 or 0,2,4-7."
)
@click.option(
    "--rank-pattern",
    default=None,
    help="Per-module ranks as JSON, e.g. '{\"v_proj\": 32}' (PEFT rank_pattern).",
)
@click.option("--dora", is_flag=True, help="DoRA: add a magnitude vector per module.")
@click.option(
    "--bias",
    type=click.Choice(["none", "all", "lora_only"]),
    default="none",
    show_default=True,
    help="Which biases train alongside LoRA.",
)
@click.option(
    "--modules-to-save", default=None, help="Modules trained in full, comma-separated (e.g. lm_head)."
)
@click.option(
    "--ensure-weight-tying",
    is_flag=True,
    help="PEFT's ensure_weight_tying: a head tied to the embeddings shares their trained copy.",
)
@click.option(
    "--dtype",
    type=click.Choice(DTYPE_CHOICES),
    default="bf16",
    show_default=True,
    help="dtype of the adapter file and of the model weights in the memory estimate.",
)
@click.option("--claim", default=None, help="Claimed LoRA parameter count, e.g. 33M, 4.2B or 1,234,567.")
@click.option(
    "--claim-percent", default=None, help="Claimed percentage of the model, e.g. 0.45 (meaning 0.45 %)."
)
@click.option("--claim-total", default=None, help="Claimed total parameters of the model, e.g. 6.7B.")
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.02,
    show_default=True,
    help="Relative tolerance of a claim (0.02 = 2 %).",
)
@click.option(
    "--shapes",
    type=click.Choice(["auto", "hf", "rules"]),
    default="auto",
    show_default=True,
    help="Shapes of a config: hf = transformers on the meta device, rules = lorascope's own rules, "
    "auto = hf when installed.",
)
@click.option(
    "--head",
    type=click.Choice(["base", "causal-lm", "masked-lm", "seq-cls"]),
    default=None,
    help="Model head [default: what the config's 'architectures' names].",
)
@click.option(
    "--model",
    "base_model",
    type=CHECKPOINT,
    default=None,
    help="For an adapter SOURCE: the base model's config.json or folder (or Hub id), to compare "
    "and check claims.",
)
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) of SOURCE, if a Hub id.")
@click.option("--model-revision", default=None, help="Hub revision of --model, when it is a Hub id.")
@click.option(
    "--allow-unmatched",
    is_flag=True,
    help="Count the targets that match when some match nothing (as PEFT does).",
)
@click.option("--no-master-weights", is_flag=True, help="Memory estimate without fp32 master weights.")
@json_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write params.json and modules.csv here.",
)
@click.pass_context
def params(
    ctx,
    source,
    rank,
    alpha,
    targets,
    layers,
    rank_pattern,
    dora,
    bias,
    modules_to_save,
    ensure_weight_tying,
    dtype,
    claim,
    claim_percent,
    claim_total,
    tolerance,
    shapes,
    head,
    base_model,
    revision,
    model_revision,
    allow_unmatched,
    no_master_weights,
    as_json,
    out,
):
    """Exact LoRA parameter counts for SOURCE, with file size, training memory and claim checks.

    \b
    SOURCE is a model config.json or folder (shapes from the config, no weights needed), a checkpoint (shapes
    from its headers, no data read), or a PEFT adapter folder (audited against its adapter_config.json); or
    a Hugging Face Hub id of one of these (only config.json is fetched for a model).
    \b
      lorascope params llama-2-7b/config.json -r 8 -t q_proj,v_proj --claim 4.2M
      lorascope params mistral.json -t all-linear --dora --claim-percent 0.58
      lorascope params my-adapter/ --model base/config.json
      lorascope params RUN_DIR                      a trainer run's adapter on its base
    """
    import json

    from ..audit.claims import Claim
    from ..audit.count import LoraSettings
    from ..audit.numbers import parse_count, parse_layers, parse_percent
    from ..audit.params import AdapterResult, AuditOptions, audit_source
    from ..audit.render import print_adapter, print_params
    from ..audit.shape_source import source_kind
    from ..audit.targets import parse_targets
    from ..errors import LorascopeError
    from .folders import params_input

    source, base_model = params_input(source, base_model)
    pattern = {}
    if rank_pattern:
        try:
            pattern = json.loads(rank_pattern)
        except json.JSONDecodeError as exc:
            raise LorascopeError(
                f"--rank-pattern {rank_pattern!r} is not valid JSON ({exc}); expected e.g. "
                "'{\"v_proj\": 32}'."
            ) from None
        if not isinstance(pattern, dict) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pattern.values()
        ):
            raise LorascopeError(
                f"--rank-pattern {rank_pattern!r} must map name patterns to positive integer ranks."
            )
    settings = LoraSettings(
        rank=rank,
        alpha=alpha,
        targets=parse_targets(targets),
        layers=parse_layers(layers),
        rank_pattern=pattern,
        dora=dora,
        bias=bias,
        allow_unmatched=allow_unmatched,
        ensure_weight_tying=ensure_weight_tying,
        modules_to_save=tuple(m.strip() for m in modules_to_save.split(",") if m.strip())
        if modules_to_save
        else (),
    )
    claimed = {
        "lora": parse_count(claim, "--claim") if claim else None,
        "percent": parse_percent(claim_percent, "--claim-percent") if claim_percent else None,
        "total": parse_count(claim_total, "--claim-total") if claim_total else None,
    }
    checked = Claim(**claimed, tolerance=tolerance) if any(v is not None for v in claimed.values()) else None
    source = resolve_input(source, revision, need="config", quiet=as_json)
    base_model = resolve_input(base_model, model_revision, need="config", quiet=as_json)
    options = AuditOptions(
        shapes=shapes, head=head, dtype=dtype, master_weights=not no_master_weights, model=base_model
    )
    if source_kind(source) == "adapter":
        given = [
            f"--{p.replace('_', '-')}"
            for p in LORA_OPTIONS
            if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            click.secho(
                f"warning: {', '.join(given)} ignored: an adapter brings its own settings "
                "(adapter_config.json).",
                err=True,
                fg="yellow",
            )
    elif base_model is not None:
        raise LorascopeError("--model is for an adapter SOURCE (its base model); SOURCE is already a model.")
    result = audit_source(source, settings, options, checked)
    if not as_json:  # under --json the document comes last, once the folder is written
        (print_adapter if isinstance(result, AdapterResult) else print_params)(result)
    if out is not None:
        _save_params(check_out(out, marker=("params.json", "modules.csv")), result)
        wrote(out)
    emit({"params": out}, **result.to_dict())


def _save_params(out: Path, result) -> None:
    import json

    from ..audit.params import AdapterResult
    from ..outputs import writing

    table = result.audit.modules if isinstance(result, AdapterResult) else result.count.table
    with writing(out, "params") as tx:
        (tx.stage / "params.json").write_text(json.dumps(result.to_dict(), indent=2))
        table.to_csv(tx.stage / "modules.csv", index=False)


@click.command()
@click.argument("claims", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder [default: reports/audit-<yaml stem>].",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no terminal table.")
@json_option
def audit(claims, out, quiet, as_json):
    """Check many claimed parameter counts at once, listed in CLAIMS.yaml.

    Writes audit.csv and audit.html (a self-contained page) to --out and prints the table. Each claim names a
    model (config.json, folder or checkpoint), LoRA settings (rank, alpha, targets, layers, rank_pattern,
    dora, bias, modules_to_save) and claimed figures (lora, percent, total); see
    `lorascope.audit.claims_file`.
    """
    from .. import __version__
    from ..audit.claims_file import read_claims, run_claims
    from ..audit.render import print_claims_table, render_page, save_audit
    from ..errors import LorascopeError
    from ..progress import progress_bar

    specs = read_claims(claims)
    out = check_out(out or default_out("audit", claims), marker=("audit.csv", "audit.html"))
    with progress_bar(len(specs), "claims", enabled=not quiet) as bar:
        table = run_claims(specs, bar)
    html = render_page(
        table,
        f"Parameter-count audit: {Path(claims).name}",
        subtitle=f"{len(specs)} claims from {claims}; counts by lorascope {__version__}",
        footer="Exact counts follow PEFT's target matching and LoRA shapes r·(out+in); a claim is "
        "correct within its tolerance. Explanations recompute the count under common mistakes.",
    )
    save_audit(out, table, html)
    if not quiet and not as_json:
        print_claims_table(table)
    wrote(out, "audit.csv and audit.html")
    written = {"results": out, "table": out / "audit.csv", "report": out / "audit.html"}
    verdicts = {str(k): int(v) for k, v in table["verdict"].value_counts().items()}
    errors = table[table["verdict"] == "error"]
    if not errors.empty:
        message = f"{len(errors)} claim(s) could not be checked (their rows say why):\n" + "\n".join(
            f"  - {r.name}: {r.explanation}" for r in errors.itertuples()
        )
        emit_error(message, 2, written, claims=records(table), verdicts=verdicts)
        raise LorascopeError(message)
    emit(written, claims=records(table), verdicts=verdicts)
