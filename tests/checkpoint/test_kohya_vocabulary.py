"""lorascope/checkpoint/kohya_vocabulary.py: the module paths kohya stems resolve to, checked against the
module names the libraries define (tests/checkpoint/module_names, dumped from diffusers and transformers)."""

from pathlib import Path

from lorascope.checkpoint.kohya_grammar import parses
from lorascope.checkpoint.kohya_vocabulary import CLIP, LLM, SGM, UNET, sgm_to_diffusers

NAMES = Path(__file__).parent / "module_names"


def resolves(entries, dotted: str) -> bool:
    tokens = dotted.replace(".", "_").split("_")
    return any(list(parses(tokens, e.parts)) for e in entries)


def test_the_vocabulary_covers_the_libraries_module_names():
    for entries, file in ((UNET, "sd15_unet.txt"), (CLIP, "clip_l.txt"), (LLM, "llama.txt")):
        lines = (NAMES / file).read_text().splitlines()
        names = [
            n.strip() for n in lines if n.strip() and not n.startswith("#")
        ]  # '#': which library version
        assert names and [n for n in names if not resolves(entries, n)] == [], file


def test_sgm_names_map_to_diffusers():
    assert SGM
    assert (
        sgm_to_diffusers(("input_blocks", "4", "1", "proj_in")) == "unet.down_blocks.1.attentions.0.proj_in"
    )
