"""What watching a training run costs: one ``SpectrumCallback`` record of a Llama-2-7B-shaped LoRA adapter.

    python benchmarks/callback_cost.py [--rank 16] [--repeats 5] [--every 50] [--tokens 16384] [--mfu 0.4]
    python benchmarks/callback_cost.py --gpu-step [--batch 4] [--seq 2048]     # measured on a CUDA GPU

The adapter: PEFT LoRA, r = 16, on every linear layer of Llama-2-7B (32 layers × q, k, v, o, gate, up, down:
224 modules; hidden 4096, MLP 11008), float32 factors on the CPU. The base model is built on the meta device
(no memory): only the adapter's 40M parameters exist. Measured, median of --repeats after one warm-up:

- ``snapshot``: the spectra and metrics of every module (what the callback computes), wall and CPU seconds;
- ``record_spectra``: that plus writing the record (training_spectra.csv, σ per step, the results folder).

A 7B training step cannot run on this machine, so its time is an estimate, stated with its formula: a LoRA
step costs about 4·N·T FLOPs (forward 2NT, backward through the activations 2NT; no weight gradients of the
frozen base; Kaplan et al. 2020 §2.1 count 6NT for full training), with N = 6.74e9 parameters and T = --tokens
per step, at --mfu of an A100's 312 TFLOP/s bf16 peak (--peak). To check the ratio on real hardware, the same
record is also timed against a measured training step of a small Llama (hidden 512, 4 layers, r = 16 on every
linear layer, 8 × 128 tokens) trained here on the CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lorascope.callbacks import record_spectra, snapshot  # noqa: E402

LLAMA2_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
}
SMALL = {
    "hidden_size": 512,
    "intermediate_size": 1376,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "vocab_size": 4000,
}
N_7B = 6.74e9  # Llama-2-7B parameters (Touvron et al. 2023, Table 1)


def peft_model(shape: dict, rank: int, meta_base: bool):
    """A PEFT LoRA model of this shape, r on every linear layer; with ``meta_base`` only the adapter exists
    (random factors with a decaying spectrum, as trained adapters have)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=2048)
    if meta_base:
        with torch.device("meta"):
            base = LlamaForCausalLM(config)
    else:
        torch.manual_seed(0)
        base = LlamaForCausalLM(config)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    if meta_base:
        gen = torch.Generator().manual_seed(0)
        decay = torch.logspace(0, -2, rank)
        for name, module in model.named_modules():
            if name.endswith((".lora_A.default", ".lora_B.default")):
                module.to_empty(device="cpu")
                w = module.weight  # A (r, in), B (out, r)
                scale = decay.reshape(1, -1) if name.endswith("B.default") else torch.ones(())
                with torch.no_grad():
                    w.copy_(0.02 * torch.randn(w.shape, generator=gen) * scale)
    return model


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median wall s, median CPU s) of ``fn`` after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def small_step_seconds(rank: int, repeats: int) -> tuple[float, float, object]:
    """(median wall s, median CPU s) of one training step of the small model here, and the model."""
    model = peft_model(SMALL, rank, meta_base=False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, SMALL["vocab_size"], (8, 128), generator=torch.Generator().manual_seed(1))

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    wall, cpu = timed(step, repeats)
    return wall, cpu, model


def gpu_7b(rank: int, repeats: int, every: int, batch: int, seq: int) -> None:
    """Measured on a GPU: a real Llama-2-7B-shaped model (random bf16 weights, built on the GPU), PEFT LoRA r
    on every linear layer, one training step (forward, backward, AdamW on the adapter; gradient
    checkpointing) of batch × seq tokens, against one ``record_spectra`` of the same model (factors read
    from the GPU)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**LLAMA2_7B, max_position_embeddings=seq)
    torch.manual_seed(0)
    with torch.device("cuda"):
        base = LlamaForCausalLM(config).to(torch.bfloat16)
    base.gradient_checkpointing_enable()
    base.enable_input_require_grads()
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)  # trained-like, not PEFT's zero init
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (batch, seq), device="cuda")

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()

    step_wall, _ = timed(step, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1, 10**6))
        rec_wall, rec_cpu = timed(lambda: record_spectra(model, next(counter), Path(tmp) / "rec"), repeats)
    tokens = batch * seq
    print(
        f"\nmeasured on {torch.cuda.get_device_name()}: Llama-2-7B shapes, bf16, LoRA r = {rank} "
        f"on every linear layer, {batch} × {seq} = {tokens} tokens per step, gradient checkpointing; "
        f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB\n\n"
        f"| what | wall s (median of {repeats}) | "
        f"share of one step | amortized, every {every} steps |\n| --- | --- | --- | --- |\n"
        f"| training step | {step_wall:.3f} | | |\n"
        f"| record_spectra | {rec_wall:.3f} (CPU {rec_cpu:.3f}) | {rec_wall / step_wall:.2%} | "
        f"{rec_wall / (every * step_wall):.3%} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--every", type=int, default=50, help="every_n_steps for the amortized share")
    ap.add_argument("--tokens", type=int, default=16384, help="tokens per 7B training step (e.g. 8 × 2048)")
    ap.add_argument("--peak", type=float, default=312e12, help="accelerator peak FLOP/s (A100 bf16: 312e12)")
    ap.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilization of the 7B step")
    ap.add_argument("--no-small", action="store_true", help="skip the measured small-model comparison")
    ap.add_argument(
        "--gpu-step",
        action="store_true",
        help="measure a real 7B-shaped training step and record on the GPU instead of estimating",
    )
    ap.add_argument("--batch", type=int, default=4, help="--gpu-step: sequences per step")
    ap.add_argument("--seq", type=int, default=2048, help="--gpu-step: tokens per sequence")
    args = ap.parse_args()
    if args.gpu_step:
        gpu_7b(args.rank, args.repeats, args.every, args.batch, args.seq)
        return

    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs; the spectra are taken on one thread "
        f"(lorascope.callbacks), training uses {torch.get_num_threads()}; load average "
        f"{os.getloadavg()[0]:.1f} (wall times stretch when it exceeds the CPUs; CPU times do not)"
    )
    model = peft_model(LLAMA2_7B, args.rank, meta_base=True)
    snap = snapshot(model)
    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    print(
        f"adapter: {len(snap.modules)} modules, r = {args.rank}, {params / 1e6:.1f}M float32 parameters "
        "on the CPU"
    )
    snap_wall, snap_cpu = timed(lambda: snapshot(model), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1, 10**6))
        rec_wall, rec_cpu = timed(
            lambda: record_spectra(model, next(counter), Path(tmp) / "rec"), args.repeats
        )

    step_7b = 4 * N_7B * args.tokens / (args.mfu * args.peak)
    print(
        f"\n7B step (estimate): 4·N·T / (MFU·peak) = 4 × {N_7B:.3g} × {args.tokens} / ({args.mfu} × "
        f"{args.peak:.3g}) = {step_7b:.2f} s"
    )
    print(
        "\nShares use CPU seconds: the spectra are taken on one thread, so on an idle core their wall time "
        "is their CPU time.\n\n| what | wall s | CPU s | share of one 7B step | amortized, every "
        f"{args.every} steps |\n| --- | --- | --- | --- | --- |"
    )
    for label, wall, cpu in (
        ("snapshot (spectra + metrics)", snap_wall, snap_cpu),
        ("record_spectra (+ files)", rec_wall, rec_cpu),
    ):
        share, amortized = cpu / step_7b, cpu / (args.every * step_7b)
        print(f"| {label} | {wall:.3f} | {cpu:.3f} | {share:.2%} | {amortized:.3%} |")

    if not args.no_small:
        step_wall, step_cpu, small = small_step_seconds(args.rank, args.repeats)
        s_wall, s_cpu = timed(lambda: snapshot(small), args.repeats)
        n_small = len(snapshot(small).modules)
        print(
            f"\nmeasured here: a training step of the small Llama ({n_small} LoRA modules, 8 × 128 tokens) "
            f"{step_wall:.3f} s wall / {step_cpu:.3f} s CPU; its snapshot {s_wall:.4f} s wall / "
            f"{s_cpu:.4f} s CPU "
            f"= {s_cpu / step_cpu:.2%} of a step's CPU time ({s_wall / step_wall:.2%} of its wall time), "
            f"{s_cpu / (args.every * step_cpu):.3%} every {args.every} steps"
        )


if __name__ == "__main__":
    main()
