"""`fourfold demo`: build a tiny model of each configuration, run it, and generate from the generative ones.

No data and no training yet: this shows the four configurations side by side with random weights.
"""

import argparse

import torch

from fourfold.configuration import ARCHITECTURES, get_config
from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldEncoderForMaskedLM,
    FourfoldPrefixLMForCausalLM,
    FourfoldSeq2SeqForConditionalGeneration,
)

HEADS = {
    "encoder": FourfoldEncoderForMaskedLM,
    "decoder": FourfoldDecoderForCausalLM,
    "prefix-lm": FourfoldPrefixLMForCausalLM,
    "seq2seq": FourfoldSeq2SeqForConditionalGeneration,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fourfold demo", description=__doc__)
    parser.add_argument("--architecture", choices=[*ARCHITECTURES, "all"], default="all")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    prompt = torch.randint(3, 100, (1, 8))
    for architecture in ARCHITECTURES if args.architecture == "all" else [args.architecture]:
        model = HEADS[architecture](get_config(f"{architecture}-tiny", vocab_size=100)).eval()
        outputs = model(prompt, labels=prompt)
        line = f"{architecture:>9}: {model.num_parameters():,} parameters, random-init loss {outputs.loss:.2f}"
        if architecture != "encoder":
            generated = model.generate(prompt, max_new_tokens=8, do_sample=False)
            line += f", greedy continuation {generated[0, -8:].tolist()}"
        print(line)
    return 0
