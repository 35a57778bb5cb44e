"""The reference LoRA trainer: comparison runs whose answers are known.

Independent of the spectrum engine; ``demo.py`` joins the two. Rooms, each with one job:

- ``world.py``, ``tokenizer.py``, ``data.py``: the synthetic facts world, its word-level tokenizer, and
  the tasks (``edit:K``, ``domain``, a text or JSONL file) as tensors.
- ``model.py``: MiniGPT, a small Llama with Hugging Face Llama parameter names.
- ``lora.py``, ``nf4.py``, ``methods.py``: LoRA / DoRA layers (PEFT's semantics), the NF4 frozen base, and
  which parameters each method trains (lora, dora, lora-plus, qlora, full, freeze).
- ``trainer.py``, ``memory.py``: the loop (AdamW, warmup + cosine, clipping), evaluation, rank snapshots,
  peak memory.
- ``pretrain.py``, ``runs.py``, ``folders.py``: the cached default base, run folders and sweeps, and what
  they write.
- ``demo.py``: pre-train, sweep, analyze every run and render one comparison report.
"""
