"""Task heads: shapes, losses against hand-computed references, and pooling that ignores padding."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from fourfold import modeling

V = 101  # tiny_config's vocabulary
B, T = 2, 6


def ids(batch: int = B, length: int = T, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def build(class_name: str, architecture: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(modeling, class_name)(tiny_config(architecture, **overrides)).eval()


def realign(model: torch.nn.Module) -> torch.nn.Module:
    """Fresh, aligned copies of memory-mapped weights (see test_save_load.realign): bit-exact CPU outputs."""
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()
    return model


# --------------------------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------------------------


def test_encoder_masked_lm():
    model = build("FourfoldEncoderForMaskedLM", "encoder")
    input_ids = ids()
    labels = torch.full_like(input_ids, -100)
    labels[0, 1], labels[1, 4] = 17, 42
    output = model(input_ids=input_ids, labels=labels)
    assert output.logits.shape == (B, T, V)
    expected = F.cross_entropy(output.logits.view(-1, V), labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)  # masked LM: no shift


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "labels"),
    [
        ("single_label_classification", 3, torch.tensor([0, 2])),
        ("multi_label_classification", 3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
        ("regression", 1, torch.tensor([0.5, -1.5])),
    ],
)
def test_encoder_sequence_classification(problem_type, num_labels, labels):
    overrides = {"num_labels": num_labels}
    if problem_type == "multi_label_classification":
        overrides["problem_type"] = problem_type  # float labels with num_labels > 1 need it said explicitly
    model = build("FourfoldEncoderForSequenceClassification", "encoder", **overrides)
    output = model(input_ids=ids(), labels=labels)
    assert output.logits.shape == (B, num_labels)
    assert model.config.problem_type == problem_type
    if problem_type == "single_label_classification":
        expected = F.cross_entropy(output.logits, labels)
    elif problem_type == "multi_label_classification":
        expected = F.binary_cross_entropy_with_logits(output.logits, labels)
    else:
        expected = F.mse_loss(output.logits.squeeze(-1), labels)
    torch.testing.assert_close(output.loss, expected)


@pytest.mark.parametrize(
    ("class_name", "architecture"),
    [
        ("FourfoldEncoderForTokenClassification", "encoder"),
        ("FourfoldDecoderForTokenClassification", "decoder"),
    ],
)
def test_token_classification(class_name, architecture):
    model = build(class_name, architecture, num_labels=5)
    labels = torch.randint(0, 5, (B, T))
    labels[1, -2:] = -100
    output = model(input_ids=ids(), labels=labels)
    assert output.logits.shape == (B, T, 5)
    expected = F.cross_entropy(output.logits.view(-1, 5), labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)


def test_decoder_token_classification_sees_only_the_left_context():
    model = build("FourfoldDecoderForTokenClassification", "decoder", num_labels=5)
    input_ids = ids()
    changed = input_ids.clone()
    changed[:, -1] = 50
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=changed).logits[:, :-1], model(input_ids=input_ids).logits[:, :-1])


def test_encoder_question_answering():
    model = build("FourfoldEncoderForQuestionAnswering", "encoder")
    start, end = torch.tensor([1, 2]), torch.tensor([3, 5])
    output = model(input_ids=ids(), start_positions=start, end_positions=end)
    assert output.start_logits.shape == output.end_logits.shape == (B, T)
    expected = (F.cross_entropy(output.start_logits, start) + F.cross_entropy(output.end_logits, end)) / 2
    torch.testing.assert_close(output.loss, expected)


def test_encoder_multiple_choice():
    model = build("FourfoldEncoderForMultipleChoice", "encoder")
    input_ids = ids(B * 3).view(B, 3, T)  # (B, C, T)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, 1, -2:] = 0
    labels = torch.tensor([2, 0])
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert output.logits.shape == (B, 3)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits, labels))
    with torch.no_grad():  # each choice is scored on its own
        alone = model(input_ids=input_ids[1:, 2:], attention_mask=attention_mask[1:, 2:]).logits
    torch.testing.assert_close(alone[0, 0], output.logits[1, 2])


@torch.no_grad()
def test_encoder_mean_pooling_averages_the_real_tokens():
    """classifier_pooling="mean": the classifier reads the mean of the final states over non-padding tokens, so pad
    tokens change nothing and the real tokens all count; the reference is the base model's states, averaged here."""
    model = build("FourfoldEncoderForSequenceClassification", "encoder", num_labels=3, classifier_pooling="mean")
    assert not [name for name, _ in model.named_parameters() if name.startswith("pooler.")]  # no weights
    input_ids = ids()
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, hidden)
    expected = torch.stack([hidden[0].mean(0), hidden[1, :-2].mean(0)])  # (B, hidden), by hand
    torch.testing.assert_close(logits, model.classifier(expected))
    changed = input_ids.clone()
    changed[1, -2:] = torch.tensor([7, 9])  # other pad-position ids: the same logits
    torch.testing.assert_close(model(input_ids=changed, attention_mask=attention_mask).logits, logits)
    changed[1, 1] = (input_ids[1, 1] + 1) % V  # a real token that is not the first: row 1 changes, row 0 does not
    moved = model(input_ids=changed, attention_mask=attention_mask).logits
    assert not torch.allclose(moved[1], logits[1])
    torch.testing.assert_close(moved[0], logits[0])


@torch.no_grad()
def test_encoder_multiple_choice_mean_pooling_scores_each_choice_alone():
    model = build("FourfoldEncoderForMultipleChoice", "encoder", classifier_pooling="mean")
    input_ids = ids(B * 3).view(B, 3, T)  # (B, C, T)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 2, -3:] = 0
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    hidden = model.model(input_ids=input_ids[1, 2:, :-3]).last_hidden_state  # (1, T - 3, hidden)
    torch.testing.assert_close(logits[1, 2], model.classifier(hidden.mean(1))[0, 0], atol=1e-5, rtol=1e-4)


def test_classifier_pooling_is_checked_and_kept_in_the_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="classifier_pooling='max' is not supported; choose one of 'cls', 'mean'"):
        tiny_config("encoder", classifier_pooling="max")
    masked_lm = build("FourfoldEncoderForMaskedLM", "encoder", classifier_pooling="mean")
    masked_lm.save_pretrained(tmp_path)
    loaded, info = modeling.FourfoldEncoderForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert loaded.config.classifier_pooling == "mean"
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]  # no pooler to initialise


# --------------------------------------------------------------------------------------------------------------------
# Decoder and prefix LM
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "architecture"),
    [
        ("FourfoldDecoderForCausalLM", "decoder"),
        ("FourfoldPrefixLMForCausalLM", "prefix-lm"),
    ],
)
def test_causal_lm_loss_is_shifted(class_name, architecture):
    model = build(class_name, architecture)
    input_ids = ids()
    labels = input_ids.clone()
    labels[1, -2:] = -100
    output = model(input_ids=input_ids, labels=labels)
    assert output.logits.shape == (B, T, V)
    logits, targets = output.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1)  # position t predicts t + 1
    torch.testing.assert_close(output.loss, F.cross_entropy(logits, targets, ignore_index=-100))

    num_items = int((labels[:, 1:] != -100).sum()) + 3  # as the Trainer passes it under gradient accumulation
    summed = model(input_ids=input_ids, labels=labels, num_items_in_batch=torch.tensor(num_items)).loss
    torch.testing.assert_close(summed, F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum") / num_items)


def test_prefix_lm_loss_with_a_prefix():
    model = build("FourfoldPrefixLMForCausalLM", "prefix-lm")
    input_ids = ids()
    prefix_mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    labels = input_ids.masked_fill(prefix_mask == 1, -100)
    output = model(input_ids=input_ids, prefix_mask=prefix_mask, labels=labels)
    expected = F.cross_entropy(output.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)


@pytest.mark.parametrize(
    ("class_name", "architecture"),
    [
        ("FourfoldDecoderForSequenceClassification", "decoder"),
        ("FourfoldPrefixLMForSequenceClassification", "prefix-lm"),
    ],
)
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_sequence_classification_pools_the_last_real_token(class_name, architecture, padding_side):
    model = build(class_name, architecture, num_labels=3)
    input_ids = ids()
    attention_mask = torch.ones_like(input_ids)
    pad = slice(-2, None) if padding_side == "right" else slice(0, 2)
    attention_mask[1, pad] = 0
    labels = torch.tensor([0, 2])
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert output.logits.shape == (B, 3)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits, labels))

    with torch.no_grad():
        for pad_id in (0, 7, 93):  # whatever the padded positions hold, the logits stay
            changed = input_ids.clone()
            changed[1, pad] = pad_id
            torch.testing.assert_close(model(input_ids=changed, attention_mask=attention_mask).logits, output.logits)
        # ... and the pooled position is the last real one: row 1 alone, unpadded, gives the same logits.
        real = input_ids[1:, 2:] if padding_side == "left" else input_ids[1:, :-2]
        torch.testing.assert_close(model(input_ids=real).logits[0], output.logits[1], atol=1e-5, rtol=1e-4)


def test_prefix_lm_sequence_classification_treats_the_whole_input_as_prefix():
    model = build("FourfoldPrefixLMForSequenceClassification", "prefix-lm", num_labels=3)
    input_ids = ids()
    embeds = model.model.embed_tokens(input_ids)
    everything = torch.ones_like(input_ids)
    with torch.no_grad():
        default = model(input_ids=input_ids).logits
        torch.testing.assert_close(model(input_ids=input_ids, prefix_mask=everything).logits, default)
        torch.testing.assert_close(model(inputs_embeds=embeds).logits, default)  # also without input_ids
        causal = model(input_ids=input_ids, prefix_mask=torch.zeros_like(input_ids)).logits
    assert not torch.allclose(causal, default)


def test_default_prefix_mask_is_the_input_less_its_padding():
    """One rule for the prefix LM's missing prefix_mask (sequence classification and generate()): the attention
    mask, else the non-pad tokens, else every token."""
    from fourfold.modeling.heads import default_prefix_mask

    input_ids = torch.tensor([[0, 5, 6, 7]])
    attention_mask = torch.tensor([[0, 0, 1, 1]])
    assert default_prefix_mask(input_ids, None, attention_mask, 0) is attention_mask
    assert default_prefix_mask(input_ids, None, None, 0).tolist() == [[0, 1, 1, 1]]
    assert default_prefix_mask(input_ids, None, None, None).tolist() == [[1, 1, 1, 1]]
    assert default_prefix_mask(None, torch.zeros(1, 3, 8), None, 0).tolist() == [[1, 1, 1]]
    assert default_prefix_mask(None, None, None, 0) is None


def test_decoder_sequence_classification_finds_padding_from_pad_token_id():
    model = build("FourfoldDecoderForSequenceClassification", "decoder", num_labels=3)
    input_ids = ids()
    input_ids[1, -2:] = model.config.pad_token_id
    with torch.no_grad():
        padded = model(input_ids=input_ids).logits
        unpadded = model(input_ids=input_ids[1:, :-2]).logits
    torch.testing.assert_close(padded[1], unpadded[0])


# --------------------------------------------------------------------------------------------------------------------
# Seq2seq
# --------------------------------------------------------------------------------------------------------------------


def test_seq2seq_decoder_inputs_are_labels_shifted_right():
    model = build("FourfoldSeq2SeqForConditionalGeneration", "seq2seq", decoder_start_token_id=1)
    labels = torch.tensor([[5, 6, 7, -100], [8, -100, -100, -100]])
    expected = torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0]])  # start token first; -100 becomes pad (0)
    assert torch.equal(model.prepare_decoder_input_ids_from_labels(labels), expected)
    with torch.no_grad():
        from_labels = model(input_ids=ids(), labels=labels).logits
        explicit = model(input_ids=ids(), decoder_input_ids=expected).logits
    assert torch.equal(from_labels, explicit)


def test_seq2seq_loss_is_not_shifted():
    model = build("FourfoldSeq2SeqForConditionalGeneration", "seq2seq")
    labels = torch.tensor([[5, 6, 7, 9], [8, 4, -100, -100]])
    output = model(input_ids=ids(), labels=labels)
    assert output.logits.shape == (B, 4, V)
    expected = F.cross_entropy(output.logits.view(-1, V), labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)
    summed = model(input_ids=ids(), labels=labels, num_items_in_batch=torch.tensor(10)).loss
    torch.testing.assert_close(
        summed, F.cross_entropy(output.logits.view(-1, V), labels.view(-1), ignore_index=-100, reduction="sum") / 10
    )


def test_seq2seq_sequence_classification_mean_pools_real_tokens():
    model = build("FourfoldSeq2SeqForSequenceClassification", "seq2seq", num_labels=3)
    input_ids = ids()
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -3:] = 0
    labels = torch.tensor([1, 2])
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert output.logits.shape == (B, 3)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits, labels))
    with torch.no_grad():
        changed = input_ids.clone()
        changed[1, -3:] = torch.tensor([11, 57, 98])
        torch.testing.assert_close(model(input_ids=changed, attention_mask=attention_mask).logits, output.logits)
        hidden = model.model(input_ids=input_ids[1:, :-3]).last_hidden_state  # (1, 3, hidden)
        torch.testing.assert_close(model.classifier(hidden.mean(dim=1))[0], output.logits[1], atol=1e-5, rtol=1e-4)


def test_seq2seq_encoder_model_loads_the_encoder_half(tmp_path):
    full = build("FourfoldSeq2SeqForConditionalGeneration", "seq2seq")
    full.save_pretrained(tmp_path)
    encoder = realign(modeling.FourfoldSeq2SeqEncoderModel.from_pretrained(tmp_path)).eval()
    assert encoder.encoder.embed_tokens.weight is encoder.shared.weight
    input_ids = ids()
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -1] = 0
    with torch.no_grad():
        expected = full.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        actual = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert actual.shape == (B, T, 64)
    assert torch.equal(actual, expected)


@torch.no_grad()
def test_prefix_lm_classifier_keeps_padding_out_of_the_prefix_without_an_attention_mask():
    # Right padding and no attention_mask: the default prefix is the non-pad tokens, so the pooled (last real) token
    # sees exactly what it sees without the padding.
    model = build("FourfoldPrefixLMForSequenceClassification", "prefix-lm", num_labels=3, initializer_range=0.3)
    tokens = ids(batch=1, length=5)
    padded = torch.cat([tokens, torch.zeros(1, 3, dtype=torch.long)], dim=1)  # pad_token_id 0
    torch.testing.assert_close(model(padded).logits, model(tokens).logits, rtol=0, atol=1e-5)
