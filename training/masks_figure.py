"""`fourfold masks`: draw who-attends-to-whom in the four configurations, as one PNG.

The matrices are not drawn by hand: `mask_matrices` calls the same builders in `fourfold.modeling.masks` that the
models call, with the eager backend (which materialises every mask as a float matrix), and reads "may attend" off
them. Rows are queries, columns keys. The encoder's example input ends in padding, so the encoder and the seq2seq
cross-attention show a masked key column.
"""

import argparse
from pathlib import Path

import torch

from fourfold.configuration import get_config
from fourfold.modeling.masks import SELF_ATTENTION_MASKS, cross_attention_mask
from fourfold.training.architectures import ARCHITECTURES

# Panel key -> (title, attention pattern). The seq2seq model has two: its decoder's self-attention (the
# pattern of its decoder stack) and the cross-attention to the encoder; the others one, their stack's pattern.
SUBTITLES = {
    "bidirectional": "bidirectional",
    "causal": "causal",
    "prefix": "bidirectional prefix, causal after",
    "cross": "cross-attention to the encoder",
}
PANELS = {
    **{
        name: (name.replace("-lm", " LM"), record.base_model.attention_pattern)
        for name, record in ARCHITECTURES.items()
        if not record.config_class.is_encoder_decoder
    },
    "seq2seq-self": ("seq2seq decoder", "causal"),
    "seq2seq-cross": ("seq2seq decoder", "cross"),
}


def mask_matrices(length: int = 6, prefix_length: int = 3, padding: int = 1) -> dict[str, torch.BoolTensor]:
    """(length, length) boolean matrices, True = the query (row) may attend to the key (column), one per panel.

    Args:
        length: tokens in each example sequence (the seq2seq decoder and encoder use the same length).
        prefix_length: tokens in the prefix LM's bidirectional prefix.
        padding: padding tokens at the end of the example input of the bidirectional panels (encoder, cross).
    """
    if not 0 <= prefix_length <= length or not 0 <= padding < length:
        raise ValueError(
            f"Need 0 <= prefix_length <= length and 0 <= padding < length; got {prefix_length=}, {padding=}, {length=}."
        )
    config = get_config("prefix-lm-tiny")
    config._attn_implementation = "eager"  # eager materialises the mask as a float matrix (0 = attend)
    states = torch.zeros(1, length, config.hidden_size)  # (B, T, hidden): only the shape matters
    padded = torch.ones(1, length, dtype=torch.long)
    padded[:, length - padding :] = 0
    prefix_mask = (torch.arange(length) < prefix_length).long().unsqueeze(0)  # (1, T)
    matrices = {}
    for name, (_, pattern) in PANELS.items():
        if pattern == "cross":
            mask = cross_attention_mask(config, states, states, padded)
        else:  # the builder the stack of that pattern calls, with the keyword arguments the stack passes
            attention_mask = padded if pattern == "bidirectional" else None
            builder = SELF_ATTENTION_MASKS[pattern]
            mask = builder(config, states, attention_mask=attention_mask, cache=None, prefix_mask=prefix_mask)
        matrices[name] = _may_attend(mask, length, causal=pattern in ("causal", "prefix"))
    return matrices


def _may_attend(mask: torch.Tensor | None, length: int, causal: bool) -> torch.BoolTensor:
    """The boolean view of a mask. `None` stands for the pattern the attention module's `is_causal` flag applies."""
    if mask is None:
        full = torch.ones(length, length, dtype=torch.bool)
        return full.tril() if causal else full
    mask = mask[0, 0]  # (B, 1, Q, K) -> (Q, K)
    return mask if mask.dtype == torch.bool else mask == 0


def draw(matrices: dict[str, torch.BoolTensor], output: Path, prefix_length: int, padding: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import ListedColormap

    figure, axes = plt.subplots(1, len(matrices), figsize=(3.1 * len(matrices), 3.9), constrained_layout=True)
    colours = ListedColormap(["#eeeeee", "#2b5c8a"])  # masked, may attend
    for axis, (name, matrix) in zip(axes, matrices.items(), strict=True):
        configuration, pattern = PANELS[name]
        length = matrix.shape[-1]
        axis.imshow(matrix.int().numpy(), cmap=colours, vmin=0, vmax=1)
        axis.set_title(f"{configuration}\n{SUBTITLES[pattern]}", fontsize=10)
        side = ("encoder ", "decoder ") if PANELS[name][1] == "cross" else ("", "")
        axis.set_xlabel(f"{side[0]}key")
        axis.set_ylabel(f"{side[1]}query")
        key_labels = [str(i) for i in range(length)]
        if PANELS[name][1] in ("bidirectional", "cross"):
            for i in range(length - padding, length):
                key_labels[i] = "pad"
        axis.set_xticks(range(length), key_labels, fontsize=8)
        axis.set_yticks(range(length), [str(i) for i in range(length)], fontsize=8)
        axis.set_xticks([i - 0.5 for i in range(1, length)], minor=True)
        axis.set_yticks([i - 0.5 for i in range(1, length)], minor=True)
        axis.grid(which="minor", color="white", linewidth=1.5)
        axis.tick_params(which="minor", length=0)
        if PANELS[name][1] == "prefix" and prefix_length:
            edge = prefix_length - 0.5
            axis.plot([-0.5, edge, edge, -0.5, -0.5], [-0.5, -0.5, edge, edge, -0.5], color="#e07b39", linewidth=2)
    figure.suptitle("Who attends to whom (dark = may attend; the prefix is outlined)", fontsize=11)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120, bbox_inches="tight", pad_inches=0.15)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fourfold masks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("masks.png"), help="where to write the PNG")
    parser.add_argument("--length", type=int, default=6, help="tokens in the example sequence")
    parser.add_argument("--prefix-length", type=int, default=3, help="tokens in the prefix LM's prefix")
    parser.add_argument("--padding", type=int, default=1, help="padding tokens at the end of the encoder input")
    args = parser.parse_args(argv)
    matrices = mask_matrices(args.length, args.prefix_length, args.padding)
    draw(matrices, args.output, args.prefix_length, args.padding)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
