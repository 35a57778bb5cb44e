"""Our LoRA against PEFT's on the same model and the same batches: step time, peak memory, losses.

Both sides wrap the same ``transformers.LlamaForCausalLM`` (built from a config, nothing downloaded),
start from the same A and B, and train with the same loop: forward, masked cross-entropy, backward,
gradient clipping, AdamW. Only the LoRA layers differ. Each side runs in its own process, started from
a small launcher, so its peak RSS is its own.

    python benchmarks/trainer.py                              # default: DoRA off, r=16, all linear layers
    python benchmarks/trainer.py --dora --steps 20
    python benchmarks/trainer.py --hidden 1024 --layers 8 --rank 64 --targets attn

Needs the hf extra (transformers, peft).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402

TARGETS = {
    "attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1376)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4000)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--targets", choices=sorted(TARGETS), default="all-linear")
    p.add_argument("--dora", action="store_true", help="DoRA on both sides instead of LoRA.")
    p.add_argument("--steps", type=int, default=30, help="Timed steps, after --warmup untimed ones.")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--worker", choices=["lorascope", "peft"], help=argparse.SUPPRESS)
    return p


def build_model(a: argparse.Namespace):
    import torch
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=a.intermediate,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        num_key_value_heads=a.kv_heads,
        max_position_embeddings=max(a.seq, 64),
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def wrap(model, a: argparse.Namespace):
    """The model with LoRA layers of one library, and those layers as {name: (A weight, B weight)}."""
    if a.worker == "lorascope":
        from lorascope.train.lora import LoraSpec, inject, lora_layers, resolve_targets

        model.requires_grad_(False)  # the frozen base (PEFT's get_peft_model does the same)
        inject(
            model,
            resolve_targets(model, "+".join(TARGETS[a.targets])),
            LoraSpec(r=a.rank, alpha=2.0 * a.rank, dora=a.dora),
        )
        return model, {name: (m.lora_A.weight, m.lora_B.weight) for name, m in lora_layers(model)}
    import peft

    config = peft.LoraConfig(
        r=a.rank, lora_alpha=2 * a.rank, target_modules=TARGETS[a.targets], use_dora=a.dora
    )
    model = peft.get_peft_model(model, config)
    layers = {
        n.removeprefix("base_model.model."): (m.lora_A["default"].weight, m.lora_B["default"].weight)
        for n, m in model.named_modules()
        if isinstance(m, peft.tuners.lora.LoraLayer)
    }
    return model, layers


def worker(a: argparse.Namespace) -> None:
    import torch

    from lorascope.train.trainer import lm_loss, logits_of

    model, layers = wrap(build_model(a), a)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the same starting factors on both sides (B non-zero so B @ A matters from step 1)
        for name in sorted(layers):
            a_w, b_w = layers[name]
            a_w.copy_(torch.randn(a_w.shape, generator=g) / a_w.shape[1] ** 0.5)
            b_w.copy_(torch.randn(b_w.shape, generator=g) * 0.02)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    data = torch.Generator().manual_seed(2)
    ids = torch.randint(0, a.vocab, (a.warmup + a.steps, a.batch, a.seq), generator=data)
    model.train()
    times, losses = [], []
    for step in range(a.warmup + a.steps):
        start = time.perf_counter()
        loss = lm_loss(logits_of(model, ids[step]), ids[step])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - start)
        losses.append(float(loss))
    print(
        json.dumps(
            {
                "step_s": statistics.median(times),
                "losses": losses,
                "threads": torch.get_num_threads(),
                "trainable": sum(p.numel() for p in params),
                "layers": len(layers),
            }
        )
    )


def main() -> None:
    a = arguments().parse_args()
    if a.worker:
        worker(a)
        return
    measure.start_launcher()
    args = [arg for arg in sys.argv[1:]]
    results = {}
    for tool in ("lorascope", "peft"):
        run = measure.run([sys.executable, __file__, *args, "--worker", tool])
        if run.returncode != 0:
            sys.exit(f"{tool} worker failed:\n{run.output}")
        results[tool] = (run, json.loads(run.output.strip().splitlines()[-1]))
    ours, theirs = results["lorascope"][1], results["peft"][1]
    diff = max(abs(x - y) for x, y in zip(ours["losses"], theirs["losses"]))
    method = "DoRA" if a.dora else "LoRA"
    print(
        f"{method} r={a.rank} on {a.targets} ({ours['layers']} layers) of a Llama with hidden {a.hidden}, "
        f"{a.layers} blocks, vocab {a.vocab}; batch {a.batch}×{a.seq} tokens; {a.steps} timed steps; "
        f"{ours['threads']} torch threads"
    )
    print(f"{'':<12}{'step (median)':>15}{'tokens/s':>12}{'peak RSS':>12}{'trainable':>12}{'final loss':>12}")
    for tool, (run, r) in results.items():
        print(
            f"{tool:<12}{r['step_s'] * 1e3:>12.1f} ms{a.batch * a.seq / r['step_s']:>12,.0f}"
            f"{run.peak_rss_mb:>9.0f} MiB{r['trainable']:>12,}{r['losses'][-1]:>12.5f}"
        )
    print(
        f"ours / PEFT step time: {ours['step_s'] / theirs['step_s']:.2f}×; "
        f"max loss difference over {len(ours['losses'])} steps: {diff:.1e}"
    )


if __name__ == "__main__":
    main()
