"""`transformers.pipeline(...)` on fourfold checkpoints saved to a folder, each result checked against the model.

transformers' own tasks (fill-mask, text-generation, feature-extraction, text- and token-classification) and
fourfold's two registered replacements for the tasks transformers 5 removed (fourfold-text2text,
fourfold-question-answering). Loading the same pipelines through `trust_remote_code=True` without fourfold is
checked in test_push.py, on the exact file set that would be uploaded.
"""

import pytest
import torch
from hub_helpers import save_checkpoint
from transformers import AutoModelForTextEncoding, pipeline
from transformers.pipelines import PIPELINE_REGISTRY, check_task, get_supported_tasks

from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldDecoderForSequenceClassification,
    FourfoldDecoderForTokenClassification,
    FourfoldDecoderModel,
    FourfoldEncoderForMaskedLM,
    FourfoldEncoderForQuestionAnswering,
    FourfoldEncoderForSequenceClassification,
    FourfoldEncoderForTokenClassification,
    FourfoldEncoderModel,
    FourfoldPrefixLMForCausalLM,
    FourfoldPrefixLMForSequenceClassification,
    FourfoldPrefixLMModel,
    FourfoldSeq2SeqEncoderModel,
    FourfoldSeq2SeqForConditionalGeneration,
    FourfoldSeq2SeqForSequenceClassification,
)
from fourfold.modeling.pipelines import (
    QUESTION_ANSWERING_TASK,
    TEXT2TEXT_TASK,
    FourfoldQuestionAnsweringPipeline,
    FourfoldText2TextPipeline,
    hub_config_with_pipelines,
)

LABELS = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Checkpoints are built on first use and shared by the module's tests: {(architecture, head): (folder, model,
    tokenizer)}."""
    cache = {}

    def get(architecture: str, head: type, **overrides):
        key = (architecture, head)
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{architecture}-{head.__name__}")
            cache[key] = (folder, *save_checkpoint(folder, architecture, head, **overrides))
        return cache[key]

    return get


# --------------------------------------------------------------------------------------------------------------------
# transformers' own tasks
# --------------------------------------------------------------------------------------------------------------------


def test_fill_mask_ranks_the_models_own_predictions(folders):
    folder, model, tokenizer = folders("encoder", FourfoldEncoderForMaskedLM)
    text = f"the cat sat on the {tokenizer.mask_token}"
    results = pipeline("fill-mask", model=str(folder))(text, top_k=3)

    encoded = tokenizer(text, return_tensors="pt")
    mask_position = (encoded.input_ids[0] == tokenizer.mask_token_id).nonzero().item()
    with torch.no_grad():
        probabilities = model(**encoded).logits[0, mask_position].softmax(-1)
    expected = probabilities.topk(3)
    assert [r["token"] for r in results] == expected.indices.tolist()
    assert [r["score"] for r in results] == pytest.approx(expected.values.tolist(), rel=1e-5)
    assert all(r["sequence"].startswith("the cat sat on the") for r in results)


@pytest.mark.parametrize(
    ("architecture", "head"), [("decoder", FourfoldDecoderForCausalLM), ("prefix-lm", FourfoldPrefixLMForCausalLM)]
)
def test_text_generation_is_greedy_generate(folders, architecture, head):
    folder, model, tokenizer = folders(architecture, head)
    generator = pipeline("text-generation", model=str(folder))
    prompt = "the cat sat on"
    # Without special tokens: fourfold's decoder tokenizers frame a text as <s> text </s>, and after </s> a trained
    # model would rightly stop.
    result = generator(prompt, max_new_tokens=6, do_sample=False, return_full_text=False, add_special_tokens=False)
    input_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    output = model.generate(input_ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert result == [{"generated_text": tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)}]


def test_text_generation_reads_the_prompt_as_the_prefix_lm_prefix(folders):
    """Every forward of the prefix LM inside the pipeline sees prefix_mask == the prompt (left padding excluded)."""
    folder, _, tokenizer = folders("prefix-lm", FourfoldPrefixLMForCausalLM)
    generator = pipeline("text-generation", model=str(folder))
    prefix_masks = []
    generator.model.register_forward_pre_hook(
        lambda module, args, kwargs: prefix_masks.append(kwargs["prefix_mask"].clone()), with_kwargs=True
    )
    prompts = ["the cat sat on", "a dog"]
    generator(prompts, max_new_tokens=3, do_sample=False, batch_size=2, add_special_tokens=False)

    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    width = max(lengths)
    expected = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])  # left-padded prompts
    assert prefix_masks, "the prefix LM was never called"
    for prefix_mask in prefix_masks:
        assert torch.equal(prefix_mask[:, :width].cpu(), expected)
        assert prefix_mask.shape[1] == width or not prefix_mask[:, width:].any()  # generated tokens stay causal


@pytest.mark.parametrize(
    ("architecture", "base"),
    [("encoder", FourfoldEncoderModel), ("decoder", FourfoldDecoderModel), ("prefix-lm", FourfoldPrefixLMModel)],
)
def test_feature_extraction_returns_the_last_hidden_state(folders, architecture, base):
    folder, model, tokenizer = folders(architecture, base)
    features = pipeline("feature-extraction", model=str(folder), return_tensors=True)("the cat sat on the mat")
    with torch.no_grad():
        expected = model(**tokenizer("the cat sat on the mat", return_tensors="pt")).last_hidden_state
    torch.testing.assert_close(features, expected)


def test_feature_extraction_with_the_seq2seq_encoder(folders):
    """AutoModel of a seq2seq checkpoint is the full encoder-decoder (it needs decoder inputs), as for T5; the
    encoder alone is AutoModelForTextEncoding, passed to the pipeline as a model object."""
    folder, model, tokenizer = folders("seq2seq", FourfoldSeq2SeqEncoderModel)
    encoder = AutoModelForTextEncoding.from_pretrained(folder)
    features = pipeline("feature-extraction", model=encoder, tokenizer=tokenizer, return_tensors=True)("a cat")
    with torch.no_grad():
        expected = model(**tokenizer("a cat", return_tensors="pt")).last_hidden_state
    torch.testing.assert_close(features, expected)


@pytest.mark.parametrize(
    ("architecture", "head"),
    [
        ("encoder", FourfoldEncoderForSequenceClassification),
        ("decoder", FourfoldDecoderForSequenceClassification),
        ("prefix-lm", FourfoldPrefixLMForSequenceClassification),
        ("seq2seq", FourfoldSeq2SeqForSequenceClassification),
    ],
)
def test_text_classification_names_the_argmax_label(folders, architecture, head):
    folder, model, tokenizer = folders(architecture, head, **LABELS)
    texts = ["the cat sat on the mat", "a dog"]
    results = pipeline("text-classification", model=str(folder))(texts, top_k=None)
    for text, result in zip(texts, results, strict=True):
        with torch.no_grad():
            probabilities = model(**tokenizer(text, return_tensors="pt")).logits[0].softmax(-1)
        by_label = {r["label"]: r["score"] for r in result}
        assert by_label.keys() == {"negative", "positive"}
        assert [by_label["negative"], by_label["positive"]] == pytest.approx(probabilities.tolist(), rel=1e-5)


@pytest.mark.parametrize(
    ("architecture", "head"),
    [("encoder", FourfoldEncoderForTokenClassification), ("decoder", FourfoldDecoderForTokenClassification)],
)
def test_token_classification_labels_each_word(folders, architecture, head):
    tags = {"id2label": {0: "O", 1: "ANIMAL", 2: "PLACE"}, "label2id": {"O": 0, "ANIMAL": 1, "PLACE": 2}}
    folder, model, tokenizer = folders(architecture, head, **tags)
    text = "the cat sat on the mat"
    entities = pipeline("token-classification", model=str(folder), ignore_labels=[])(text)

    encoded = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping")[0]
    with torch.no_grad():
        predicted = model(**encoded).logits[0].argmax(-1)
    special = set(tokenizer.all_special_ids)
    expected = [
        (tags["id2label"][int(label)], int(start), int(end))
        for token_id, label, (start, end) in zip(encoded.input_ids[0].tolist(), predicted, offsets, strict=True)
        if token_id not in special
    ]
    assert [(e["entity"], e["start"], e["end"]) for e in entities] == expected
    if architecture == "encoder":  # WordPiece tokens are the words themselves (byte-level BPE ones are bytes)
        assert all(e["word"] == text[e["start"] : e["end"]] for e in entities)


# --------------------------------------------------------------------------------------------------------------------
# fourfold-text2text
# --------------------------------------------------------------------------------------------------------------------


def test_fourfold_pipelines_are_registered_by_import():
    assert {TEXT2TEXT_TASK, QUESTION_ANSWERING_TASK} <= set(get_supported_tasks())
    assert PIPELINE_REGISTRY.check_task(TEXT2TEXT_TASK)[1]["impl"] is FourfoldText2TextPipeline
    assert PIPELINE_REGISTRY.check_task(QUESTION_ANSWERING_TASK)[1]["impl"] is FourfoldQuestionAnsweringPipeline


def test_transformers_really_removed_the_tasks_we_replace():
    for task in ("text2text-generation", "summarization", "translation", "question-answering"):
        with pytest.raises(KeyError, match="removed"):
            check_task(task)


def test_text2text_is_generate_then_decode(folders):
    folder, model, tokenizer = folders("seq2seq", FourfoldSeq2SeqForConditionalGeneration)
    generator = pipeline(TEXT2TEXT_TASK, model=str(folder))
    texts = ["the cat sat on the mat", "a dog"]

    def reference(text: str, **generate_kwargs) -> list[str]:
        output = model.generate(**tokenizer(text, return_tensors="pt"), **generate_kwargs)
        return tokenizer.batch_decode(output, skip_special_tokens=True)

    greedy = {"max_new_tokens": 6, "min_new_tokens": 3}
    assert generator(texts[0], **greedy) == [{"generated_text": text} for text in reference(texts[0], **greedy)]
    beams = {"max_new_tokens": 5, "num_beams": 3, "num_return_sequences": 2}
    batched = generator(texts, **beams)
    assert batched == [[{"generated_text": text} for text in reference(t, **beams)] for t in texts]
    assert [len(result) for result in batched] == [2, 2]
    ids = generator(texts[1], return_tensors=True, **greedy)[0]["generated_token_ids"]
    assert torch.equal(ids, model.generate(**tokenizer(texts[1], return_tensors="pt"), **greedy)[0])


# --------------------------------------------------------------------------------------------------------------------
# fourfold-question-answering
# --------------------------------------------------------------------------------------------------------------------


def rig_answer(model, start_token_id: int, end_token_id: int):
    """Replaces the QA head's logits: 10 where the input has the given start / end token, 0 elsewhere."""

    def hook(module, args, kwargs, output):
        input_ids = kwargs["input_ids"]
        output.start_logits = (input_ids == start_token_id).float() * 10
        output.end_logits = (input_ids == end_token_id).float() * 10
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


def test_question_answering_maps_the_best_span_back_to_the_context(folders):
    folder, _, tokenizer = folders("encoder", FourfoldEncoderForQuestionAnswering)
    qa = pipeline(QUESTION_ANSWERING_TASK, model=str(folder))
    on, mat = tokenizer.convert_tokens_to_ids(["on", "mat"])
    rig_answer(qa.model, on, mat)
    # "on" and "mat" are in the question too: the answer must come from the context.
    question, context = "the mat : is the cat on it ?", "Yesterday the cat sat on the mat all day."
    result = qa(question=question, context=context)
    assert result["answer"] == "on the mat" == context[result["start"] : result["end"]]
    assert 0.5 < result["score"] <= 1.0

    assert qa({"question": question, "context": context}) == result
    assert qa(question=[question, question], context=[context, "on a mat"])[1]["answer"] == "on a mat"
    shorter = qa(question=question, context=context, max_answer_length=2, top_k=2)
    assert [answer["answer"] for answer in shorter] == ["on", "mat"]  # "on the mat" is 3 tokens


def test_question_answering_reads_a_long_context_in_windows(folders):
    folder, _, tokenizer = folders("encoder", FourfoldEncoderForQuestionAnswering)
    qa = pipeline(QUESTION_ANSWERING_TASK, model=str(folder))
    fox, dog = tokenizer.convert_tokens_to_ids(["fox", "dog"])
    rig_answer(qa.model, fox, dog)
    context = "the cat sat on the mat . " * 12 + "the quick brown fox jumps over the lazy dog ."
    assert len(tokenizer(context).input_ids) > 64  # longer than the model takes at once
    result = qa(question="who jumps ?", context=context, max_seq_len=24, doc_stride=6)
    assert result["answer"] == "fox jumps over the lazy dog"
    assert context[result["start"] : result["end"]] == result["answer"]


def test_question_answering_errors_name_the_fix(folders):
    folder, _, _ = folders("encoder", FourfoldEncoderForQuestionAnswering)
    qa = pipeline(QUESTION_ANSWERING_TASK, model=str(folder))
    with pytest.raises(ValueError, match="question= and context="):
        qa(question="where ?")
    with pytest.raises(ValueError, match="'question' and a 'context'"):
        qa({"question": "where ?"})
    with pytest.raises(ValueError, match="batch_size"):
        qa(question=["a", "b"], context=["c", "d"], batch_size=2)
    with pytest.raises(ValueError, match="one per question"):
        qa(question=["a", "b"], context=["c"])


def test_hub_config_names_the_pipeline_of_the_checkpoints_head():
    seq2seq = hub_config_with_pipelines({"architectures": ["FourfoldSeq2SeqForConditionalGeneration"]})
    assert seq2seq["custom_pipelines"] == {
        TEXT2TEXT_TASK: {"impl": "pipelines.FourfoldText2TextPipeline", "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}
    }
    qa = hub_config_with_pipelines({"architectures": ["FourfoldEncoderForQuestionAnswering"]})
    assert qa["custom_pipelines"][QUESTION_ANSWERING_TASK]["impl"] == "pipelines.FourfoldQuestionAnsweringPipeline"
    assert "custom_pipelines" not in hub_config_with_pipelines({"architectures": ["FourfoldDecoderForCausalLM"]})
