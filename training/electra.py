"""ELECTRA replaced-token detection for the encoder (Clark et al., 2020): `fourfold pretrain --objective electra`.

A small masked-LM generator fills the masked positions with samples; the discriminator, a plain fourfold encoder with
a one-logit token head, learns which tokens were replaced. It learns from every token, not only the masked 15%.

    original     [CLS] the cat sat on  the mat [SEP]
    masked       [CLS] the [M] sat [M] the mat [SEP]    MaskedLMCollator: labels hold the originals at the [M]s
    sampled                dog     on                   from the generator's logits (no gradient through a sample)
    corrupted    [CLS] the dog sat on  the mat [SEP]
    replaced     0     0   1   0   0   0   0   0        a sample equal to the original counts as original

loss = generator masked-LM loss + `discriminator_weight` (50, the paper's) x discriminator binary cross-entropy over
every non-padding token. The wrapper here lives only in training: `fourfold pretrain` saves the discriminator as a
`FourfoldEncoderForTokenClassification` (num_labels=1), which any fourfold encoder head loads, and the generator in
`generator/`. Not done: sharing the token embeddings of the two (the paper's choice; unshared is close behind).
Expect a slow start: the discriminator first learns only how many tokens are replaced (its loss settles at that
prior's entropy, ~0.4) and begins to tell which only after ~1000 steps at the demo's size (hidden 128).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.utils import ModelOutput

from fourfold.modeling import FourfoldEncoderConfig, FourfoldEncoderForMaskedLM, FourfoldEncoderForTokenClassification
from fourfold.training.outputs import save_atomically


def generator_config(config: FourfoldEncoderConfig, width_fraction: float) -> FourfoldEncoderConfig:
    """The discriminator's config narrowed to `width_fraction` of its attention heads (same head size and depth).

    The paper's best generators are 1/4 to 1/2 the discriminator's width: a stronger generator makes the task too hard.
    """
    if not 0 < width_fraction <= 1:
        raise ValueError(f"electra_generator_fraction={width_fraction} must be in (0, 1].")
    heads = max(1, round(config.num_attention_heads * width_fraction))
    overrides = dict(
        num_attention_heads=heads,
        num_key_value_heads=math.gcd(config.num_key_value_heads, heads),  # grouped-query attention must still divide
        hidden_size=heads * config.head_dim,
        head_dim=config.head_dim,
        intermediate_size=None,  # derived from the new width
    )
    fields = {k: v for k, v in config.to_dict().items() if k not in ("model_type", "transformers_version")}
    return FourfoldEncoderConfig(**{**fields, **overrides})


def replace_tokens(
    input_ids: torch.Tensor, labels: torch.Tensor, sampled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted ids, replaced): the masked positions (`labels != -100`) take `sampled` (one id per masked position,
    in row-major order); a position counts as replaced only where the sample differs from the original token."""
    selected = labels != -100
    corrupted = input_ids.clone()
    corrupted[selected] = sampled
    replaced = torch.zeros_like(selected)
    replaced[selected] = sampled != labels[selected]
    return corrupted, replaced


@dataclass
class ReplacedTokenDetectionOutput(ModelOutput):
    loss: torch.Tensor | None = None
    generator_loss: torch.Tensor | None = None
    discriminator_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # the discriminator's, (B, T): > 0 means "replaced"
    replaced: torch.Tensor | None = None  # (B, T) bool


class ReplacedTokenDetection(nn.Module):
    """Generator + discriminator, trained jointly (one optimizer, one summed loss).

    Args:
        discriminator: a `FourfoldEncoderForTokenClassification` with `num_labels=1`.
        generator: a narrower `FourfoldEncoderForMaskedLM` over the same vocabulary (`generator_config`).
        discriminator_weight: weight of the discriminator's loss (its per-token BCE is far smaller than the MLM loss).
    """

    def __init__(
        self,
        discriminator: FourfoldEncoderForTokenClassification,
        generator: FourfoldEncoderForMaskedLM,
        discriminator_weight: float = 50.0,
    ):
        super().__init__()
        if discriminator.config.num_labels != 1:
            raise ValueError(f"The discriminator needs num_labels=1, not {discriminator.config.num_labels}.")
        self.discriminator = discriminator
        self.generator = generator
        self.discriminator_weight = discriminator_weight

    @classmethod
    def from_config(
        cls, config: FourfoldEncoderConfig, generator_fraction: float = 0.5, discriminator_weight: float = 50.0
    ) -> "ReplacedTokenDetection":
        config.num_labels = 1
        discriminator = FourfoldEncoderForTokenClassification(config)
        generator = FourfoldEncoderForMaskedLM(generator_config(config, generator_fraction))
        return cls(discriminator, generator, discriminator_weight)

    def forward(
        self,
        input_ids: torch.LongTensor,
        labels: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> ReplacedTokenDetectionOutput:
        """`input_ids` and `labels` as `MaskedLMCollator` makes them (packed rows: `position_ids`, no mask)."""
        inputs = dict(attention_mask=attention_mask, position_ids=position_ids)
        # The generator predicts the masked positions only; its logits there are sampled from, so it runs the plain
        # head on those rows rather than the chunked loss (which keeps no logits).
        masked = labels != -100
        hidden = self.generator.model(input_ids=input_ids, **inputs).last_hidden_state[masked]  # (N, d)
        generator_logits = self.generator.lm_head(hidden)  # (N, V)
        generator_loss = nn.functional.cross_entropy(generator_logits.float(), labels[masked])
        with torch.no_grad():
            sampled = self.sample(generator_logits.float())  # (N,)
        corrupted, replaced = replace_tokens(input_ids, labels, sampled)
        logits = self.discriminator(input_ids=corrupted, **inputs).logits.squeeze(-1)  # (B, T)
        counted = input_ids != self.discriminator.config.pad_token_id
        if attention_mask is not None:
            counted &= attention_mask.bool()
        discriminator_loss = nn.functional.binary_cross_entropy_with_logits(
            logits[counted].float(), replaced[counted].float()
        )
        return ReplacedTokenDetectionOutput(
            loss=generator_loss + self.discriminator_weight * discriminator_loss,
            generator_loss=generator_loss.detach(),
            discriminator_loss=discriminator_loss.detach(),
            logits=logits,
            replaced=replaced,
        )

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One token per row of `logits` (N, V), drawn at temperature 1 as in the paper."""
        return torch.multinomial(logits.softmax(-1), 1).squeeze(-1)

    def state_dict(self, *args, **kwargs):
        # The generator's output embedding is its input embedding; safetensors refuses to save one tensor twice, so
        # checkpoints keep the input side only (loading refills the tied copy, which is the same parameter).
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for name, model in (("discriminator.", self.discriminator), ("generator.", self.generator)):
            for tied in getattr(model, "_tied_weights_keys", None) or {}:
                state.pop(f"{prefix}{name}{tied}", None)
        return state


def save_electra(trainer, model: ReplacedTokenDetection, tokenizer) -> FourfoldEncoderForMaskedLM:
    """Saves the discriminator as the run's model (`output_dir`) and the generator beside it (`output_dir/generator`),
    and returns the generator: it fills in masked tokens for the samples, which the discriminator cannot."""

    def save(folder: str) -> None:
        model.discriminator.save_pretrained(folder)
        model.generator.save_pretrained(Path(folder) / "generator")
        tokenizer.save_pretrained(folder)

    if trainer.is_world_process_zero():
        save_atomically(save, trainer.args.output_dir)
    return model.generator
