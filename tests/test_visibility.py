"""Who sees whom, measured on real models by perturbation.

Output position i "sees" input position j when adding a random vector to the embedding of j changes the output at i.
(A random vector, not a constant shift: a constant hides behind the norms.) Through a stack, visibility is the
transitive closure of the per-layer mask; every pattern tested here is already closed, so the measured matrix must
equal the hand-written mask exactly.
"""

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldDecoderModel,
    FourfoldEncoderModel,
    FourfoldPrefixLMForCausalLM,
    FourfoldPrefixLMModel,
    FourfoldSeq2SeqModel,
)
from tests.conftest import tiny_config

BASE_MODELS = {
    "encoder": FourfoldEncoderModel,
    "decoder": FourfoldDecoderModel,
    "prefix-lm": FourfoldPrefixLMModel,
    "seq2seq": FourfoldSeq2SeqModel,
}
SEES, BLIND = 1e-3, 1e-5  # a seen position moves the output by more than SEES; an unseen one by less than BLIND


def build(model_class, architecture: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return model_class(tiny_config(architecture, **overrides)).eval()


def embed(model, length: int, batch: int = 1, seed: int = 1) -> torch.Tensor:
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))
    return model.get_input_embeddings()(ids).detach()


@torch.no_grad()
def influence(run, embeds: torch.Tensor, seed: int = 2) -> torch.Tensor:
    """(out_len, in_len): how far output i moves when a random vector is added to input embedding j."""
    generator = torch.Generator().manual_seed(seed)
    base = run(embeds)
    columns = []
    for j in range(embeds.shape[1]):
        perturbed = embeds.clone()
        perturbed[:, j] += torch.randn(embeds.shape[-1], generator=generator)
        columns.append((run(perturbed) - base).abs().amax(dim=(0, 2)))  # (out_len,)
    return torch.stack(columns, dim=1)


def assert_visibility(moved: torch.Tensor, expected: list) -> None:
    expected = torch.tensor(expected, dtype=torch.bool)
    measured = (moved > (SEES * BLIND) ** 0.5).int()
    assert moved.shape == expected.shape
    assert (moved[expected] > SEES).all() and (moved[~expected] < BLIND).all(), (
        f"measured visibility\n{measured}\nexpected\n{expected.int()}"
    )


def tril(n: int) -> list:
    return torch.ones(n, n, dtype=torch.long).tril().tolist()


def ones(rows: int, columns: int) -> list:
    return [[1] * columns for _ in range(rows)]


def block_diagonal(*blocks: list) -> list:
    rows = sum(len(block) for block in blocks)
    columns = sum(len(block[0]) for block in blocks)
    out = torch.zeros(rows, columns, dtype=torch.long)
    r = c = 0
    for block in blocks:
        out[r : r + len(block), c : c + len(block[0])] = torch.tensor(block)
        r, c = r + len(block), c + len(block[0])
    return out.tolist()


PREFIX_3_OF_5 = [
    [1, 1, 1, 0, 0],
    [1, 1, 1, 0, 0],
    [1, 1, 1, 0, 0],
    [1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1],
]


# ---------------------------------------------------------------------------------------------------------------------
# The four self-attention patterns
# ---------------------------------------------------------------------------------------------------------------------


def test_encoder_sees_everything():
    model = build(FourfoldEncoderModel, "encoder")
    moved = influence(lambda e: model(inputs_embeds=e).last_hidden_state, embed(model, 5))
    assert_visibility(moved, ones(5, 5))


def test_encoder_padding_is_invisible():
    model = build(FourfoldEncoderModel, "encoder")
    attention_mask = torch.tensor([[1, 1, 1, 0, 0]])
    moved = influence(
        lambda e: model(inputs_embeds=e, attention_mask=attention_mask).last_hidden_state, embed(model, 5)
    )
    assert_visibility(moved[:3], [[1, 1, 1, 0, 0]] * 3)  # outputs at padding positions are not specified


def test_decoder_sees_only_the_past():
    model = build(FourfoldDecoderModel, "decoder")
    moved = influence(lambda e: model(inputs_embeds=e).last_hidden_state, embed(model, 5))
    assert_visibility(moved, tril(5))


def test_decoder_left_padding_is_invisible():
    model = build(FourfoldDecoderModel, "decoder")
    attention_mask = torch.tensor([[0, 0, 1, 1, 1]])
    moved = influence(
        lambda e: model(inputs_embeds=e, attention_mask=attention_mask).last_hidden_state, embed(model, 5)
    )
    assert_visibility(moved[2:], [[0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]])


def test_prefix_lm_prefix_is_bidirectional_continuation_causal():
    model = build(FourfoldPrefixLMModel, "prefix-lm")
    prefix_mask = torch.tensor([[1, 1, 1, 0, 0]])
    moved = influence(lambda e: model(inputs_embeds=e, prefix_mask=prefix_mask).last_hidden_state, embed(model, 5))
    assert_visibility(moved, PREFIX_3_OF_5)


def test_prefix_lm_without_prefix_is_a_decoder():
    model = build(FourfoldPrefixLMModel, "prefix-lm")
    moved = influence(lambda e: model(inputs_embeds=e).last_hidden_state, embed(model, 5))
    assert_visibility(moved, tril(5))


def test_seq2seq_decoder_is_causal_and_reads_the_whole_source():
    """Decoder self-attention is causal; cross-attention is bidirectional over the source: decoder position 0 moves
    when the LAST source token moves."""
    model = build(FourfoldSeq2SeqModel, "seq2seq")
    source, target = embed(model, 6, seed=1), embed(model, 4, seed=3)
    moved_by_target = influence(
        lambda e: model(inputs_embeds=source, decoder_inputs_embeds=e).last_hidden_state, target
    )
    assert_visibility(moved_by_target, tril(4))
    moved_by_source = influence(
        lambda e: model(inputs_embeds=e, decoder_inputs_embeds=target).last_hidden_state, source
    )
    assert_visibility(moved_by_source, ones(4, 6))
    assert moved_by_source[0, -1] > SEES


def test_seq2seq_encoder_padding_is_invisible_to_the_decoder():
    model = build(FourfoldSeq2SeqModel, "seq2seq")
    source, target = embed(model, 5, seed=1), embed(model, 3, seed=3)
    attention_mask = torch.tensor([[1, 1, 1, 0, 0]])
    moved = influence(
        lambda e: model(inputs_embeds=e, attention_mask=attention_mask, decoder_inputs_embeds=target).last_hidden_state,
        source,
    )
    assert_visibility(moved, [[1, 1, 1, 0, 0]] * 3)


# ---------------------------------------------------------------------------------------------------------------------
# Labels never see their answer
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_class, architecture, prefix",
    [
        (FourfoldDecoderForCausalLM, "decoder", None),
        (FourfoldPrefixLMForCausalLM, "prefix-lm", [1, 1, 1, 0, 0, 0]),
        (FourfoldPrefixLMForCausalLM, "prefix-lm", [1, 0, 0, 0, 0, 0]),
    ],
)
def test_labelled_position_never_sees_its_label(model_class, architecture, prefix):
    """Label t is predicted at position t - 1: the logits there must not move when token t or any later one does."""
    model = build(model_class, architecture)
    embeds = embed(model, 6)
    labels = torch.full((1, 6), -100)
    prefix_mask = None if prefix is None else torch.tensor([prefix])
    labelled = [t for t in range(1, 6) if prefix is None or not prefix[t]]
    labels[0, labelled] = 7

    def run(e):
        kwargs = {} if prefix_mask is None else {"prefix_mask": prefix_mask}
        return model(inputs_embeds=e, labels=labels, **kwargs).logits

    moved = influence(run, embeds)
    for t in labelled:
        assert (moved[t - 1, t:] < BLIND).all(), f"position {t - 1} sees the token it predicts ({t}) or a later one"
        assert (moved[t - 1, :t] > SEES).all()


def test_prefix_lm_refuses_labels_inside_the_prefix():
    """Inside the prefix, position 1 sees token 2 (below), so a label on token 2 would leak: refused."""
    model = build(FourfoldPrefixLMForCausalLM, "prefix-lm")
    ids = torch.randint(3, 101, (1, 5))
    prefix_mask = torch.tensor([[1, 1, 1, 0, 0]])
    leaking = torch.tensor([[-100, -100, 9, 9, 9]])
    with pytest.raises(ValueError, match="prefix"):
        model(ids, prefix_mask=prefix_mask, labels=leaking)
    model(ids, prefix_mask=prefix_mask, labels=torch.tensor([[-100, -100, -100, 9, 9]]))  # accepted

    moved = influence(lambda e: model(inputs_embeds=e, prefix_mask=prefix_mask).logits, embed(model, 5))
    assert moved[1, 2] > SEES  # why: the prediction of token 2 would have seen token 2


# ---------------------------------------------------------------------------------------------------------------------
# Packed documents
# ---------------------------------------------------------------------------------------------------------------------

POSITIONS = torch.tensor([[0, 1, 2, 0, 1]])  # documents of 3 and 2 tokens, no attention_mask


def test_packed_encoder_documents_are_isolated():
    model = build(FourfoldEncoderModel, "encoder")
    moved = influence(lambda e: model(inputs_embeds=e, position_ids=POSITIONS).last_hidden_state, embed(model, 5))
    assert_visibility(moved, block_diagonal(ones(3, 3), ones(2, 2)))


def test_packed_decoder_documents_are_isolated():
    model = build(FourfoldDecoderModel, "decoder")
    moved = influence(lambda e: model(inputs_embeds=e, position_ids=POSITIONS).last_hidden_state, embed(model, 5))
    assert_visibility(moved, block_diagonal(tril(3), tril(2)))


def test_packed_prefix_lm_documents_are_isolated():
    model = build(FourfoldPrefixLMModel, "prefix-lm")
    prefix_mask = torch.tensor([[1, 1, 0, 1, 1]])  # each document's prefix: 2 tokens of 3, then 2 of 2

    def run(e):
        return model(inputs_embeds=e, position_ids=POSITIONS, prefix_mask=prefix_mask).last_hidden_state

    moved = influence(run, embed(model, 5))
    assert_visibility(moved, block_diagonal([[1, 1, 0], [1, 1, 0], [1, 1, 1]], ones(2, 2)))


def test_packed_seq2seq_documents_are_isolated():
    """Source documents of 3 and 2 tokens, target documents of 2 and 3: target document d reads source document d."""
    model = build(FourfoldSeq2SeqModel, "seq2seq")
    source, target = embed(model, 5, seed=1), embed(model, 5, seed=3)
    target_positions = torch.tensor([[0, 1, 0, 1, 2]])

    def run(source, target):
        return model(
            inputs_embeds=source,
            position_ids=POSITIONS,
            decoder_inputs_embeds=target,
            decoder_position_ids=target_positions,
        ).last_hidden_state

    assert_visibility(influence(lambda e: run(source, e), target), block_diagonal(tril(2), tril(3)))
    assert_visibility(influence(lambda e: run(e, target), source), block_diagonal(ones(2, 3), ones(3, 2)))


# ---------------------------------------------------------------------------------------------------------------------
# Seq2seq: cross-attention reads the final encoder layer only
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def seq2seq():
    model = build(FourfoldSeq2SeqModel, "seq2seq", num_hidden_layers=3)
    ids = torch.randint(3, 101, (2, 6), generator=torch.Generator().manual_seed(1))
    decoder_ids = torch.randint(3, 101, (2, 4), generator=torch.Generator().manual_seed(2))
    return model, ids, decoder_ids


@torch.no_grad()
def test_seq2seq_decoder_consumes_only_the_last_hidden_state(seq2seq):
    model, ids, decoder_ids = seq2seq
    full = model(ids, decoder_input_ids=decoder_ids, output_hidden_states=True)
    assert len(full.encoder_hidden_states) > 2  # there are intermediate layers to ignore
    final = full.encoder_last_hidden_state
    scrambled = tuple(torch.randn_like(h) for h in full.encoder_hidden_states)
    again = model(
        decoder_input_ids=decoder_ids,
        encoder_outputs=BaseModelOutput(last_hidden_state=final, hidden_states=scrambled),
    )
    torch.testing.assert_close(again.last_hidden_state, full.last_hidden_state, rtol=0, atol=0)

    moved = model(
        decoder_input_ids=decoder_ids,
        encoder_outputs=BaseModelOutput(last_hidden_state=final + 1e-2 * torch.randn_like(final)),
    )
    assert (moved.last_hidden_state - full.last_hidden_state).abs().max() > SEES


@torch.no_grad()
def test_seq2seq_cross_attention_keys_and_values_are_the_final_encoder_output(seq2seq):
    model, ids, decoder_ids = seq2seq
    seen = []
    hooks = [
        projection.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        for layer in model.decoder.layers
        for projection in (layer.cross_attn.k_proj, layer.cross_attn.v_proj)
    ]
    try:
        out = model(ids, decoder_input_ids=decoder_ids)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen) == 2 * len(model.decoder.layers)
    for states in seen:
        torch.testing.assert_close(states, out.encoder_last_hidden_state, rtol=0, atol=0)


@torch.no_grad()
def test_seq2seq_intermediate_encoder_layers_act_only_through_the_final_one(seq2seq):
    """Perturbing an intermediate encoder layer's output changes the decoder, but exactly as much as feeding the
    resulting final encoder output directly does: the decoder is a function of the final layer alone."""
    model, ids, decoder_ids = seq2seq
    clean = model(ids, decoder_input_ids=decoder_ids)
    noise = torch.randn(2, 6, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    hook = model.encoder.layers[0].register_forward_hook(lambda module, args, output: output + noise)
    try:
        perturbed = model(ids, decoder_input_ids=decoder_ids)
    finally:
        hook.remove()
    assert (perturbed.last_hidden_state - clean.last_hidden_state).abs().max() > SEES
    replayed = model(
        decoder_input_ids=decoder_ids,
        encoder_outputs=BaseModelOutput(last_hidden_state=perturbed.encoder_last_hidden_state),
    )
    torch.testing.assert_close(replayed.last_hidden_state, perturbed.last_hidden_state, rtol=0, atol=0)
