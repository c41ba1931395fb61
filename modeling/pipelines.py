"""Pipelines that transformers 5.x no longer ships, for the fourfold models that need them.

transformers 5 removed `text2text-generation` (and `summarization`, `translation`) and `question-answering`; the
tasks fourfold's seq2seq and encoder-QA models exist for. Two small replacements, registered under their own names:

    fourfold-text2text           seq2seq generation, text in and text out       (AutoModelForSeq2SeqLM)
    fourfold-question-answering  extractive QA with a start/end head: the best  (AutoModelForQuestionAnswering)
                                 span of the context, mapped back to characters via token offsets

`import fourfold` registers them (`register_pipelines`). This module also travels to the Hub with every checkpoint
(it imports only torch, transformers and the standard library), and `hub_config_with_pipelines` names it in a
checkpoint's `custom_pipelines`, so `pipeline(task, model=repo, trust_remote_code=True)` works without fourfold.
The other tasks (fill-mask, text-generation, feature-extraction, text-/token-classification) are transformers' own.
"""

import math
from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

TEXT2TEXT_TASK = "fourfold-text2text"
QUESTION_ANSWERING_TASK = "fourfold-question-answering"


class FourfoldText2TextPipeline(Pipeline):
    """Text-to-text generation with an encoder-decoder model (what `text2text-generation` did in transformers 4).

    `pipe("some text")` returns `[{"generated_text": ...}]`, one dict per returned sequence; a list of texts returns
    one such list per text. Generation parameters (`max_new_tokens`, `num_beams`, `num_return_sequences`, ...) may
    be given at construction or per call; the default is greedy decoding of up to 64 new tokens.
    """

    _pipeline_calls_generate = True
    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _default_generation_config = GenerationConfig(max_new_tokens=64)

    def _sanitize_parameters(
        self,
        truncation: bool | None = None,
        return_tensors: bool | None = None,
        skip_special_tokens: bool | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        **generate_kwargs,
    ) -> tuple[dict, dict, dict]:
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        postprocess_params = {}
        if return_tensors is not None:
            postprocess_params["return_tensors"] = return_tensors
        if skip_special_tokens is not None:
            postprocess_params["skip_special_tokens"] = skip_special_tokens
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return preprocess_params, generate_kwargs, postprocess_params

    def __call__(self, inputs: str | list[str], **kwargs) -> list[dict] | list[list[dict]]:
        return super().__call__(inputs, **kwargs)

    def preprocess(self, text: str, truncation: bool = True) -> dict[str, torch.Tensor]:
        if not isinstance(text, str):
            raise TypeError(f"{TEXT2TEXT_TASK} takes a string or a list of strings, got {type(text).__name__}.")
        return self.tokenizer(text, truncation=truncation, return_tensors="pt")

    def _forward(self, model_inputs: dict[str, torch.Tensor], **generate_kwargs) -> dict[str, torch.Tensor]:
        batch_size = model_inputs["input_ids"].shape[0]
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)
        # (batch * num_return_sequences, length) -> (batch, num_return_sequences, length)
        return {"output_ids": output_ids.reshape(batch_size, -1, output_ids.shape[-1])}

    def postprocess(
        self,
        model_outputs: dict[str, torch.Tensor],
        return_tensors: bool = False,
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = False,
    ) -> list[dict]:
        sequences = model_outputs["output_ids"][0]  # the pipeline unbatches: one input per call
        if return_tensors:
            return [{"generated_token_ids": ids} for ids in sequences]
        decode_kwargs = dict(
            skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=clean_up_tokenization_spaces
        )
        return [{"generated_text": self.tokenizer.decode(ids, **decode_kwargs)} for ids in sequences]


class FourfoldQuestionAnsweringPipeline(Pipeline):
    """Extractive question answering with a start/end span head (what `question-answering` did in transformers 4).

    `pipe(question="...", context="...")` (or `pipe({"question": ..., "context": ...})`) returns
    `{"answer", "score", "start", "end"}`: the context span `context[start:end]` whose first and last tokens score
    best, with start <= end and at most `max_answer_length` tokens; `top_k > 1` returns a list of the best spans.
    A context longer than the model takes is read in overlapping windows (`doc_stride` tokens of overlap) and the best
    span of any window wins. Scores are p(start) * p(end), each a softmax over the window's context tokens.

    Needs a fast tokenizer (for character offsets). One example per forward pass: `batch_size` must stay 1, since an
    example's windows already form the batch.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(
        self,
        top_k: int | None = None,
        max_answer_length: int | None = None,
        max_seq_len: int | None = None,
        doc_stride: int | None = None,
    ) -> tuple[dict, dict, dict]:
        preprocess_params = {}
        if max_seq_len is not None:
            preprocess_params["max_seq_len"] = max_seq_len
        if doc_stride is not None:
            preprocess_params["doc_stride"] = doc_stride
        postprocess_params = {}
        if top_k is not None:
            if top_k < 1:
                raise ValueError(f"top_k={top_k}: ask for at least one answer.")
            postprocess_params["top_k"] = top_k
        if max_answer_length is not None:
            if max_answer_length < 1:
                raise ValueError(f"max_answer_length={max_answer_length}: an answer has at least one token.")
            postprocess_params["max_answer_length"] = max_answer_length
        return preprocess_params, {}, postprocess_params

    def __call__(
        self,
        inputs: dict | list[dict] | None = None,
        *,
        question: str | list[str] | None = None,
        context: str | list[str] | None = None,
        **kwargs,
    ) -> dict | list:
        if inputs is None:
            if question is None or context is None:
                raise ValueError("Pass question= and context= (or a dict with both, or a list of such dicts).")
            if isinstance(question, str) != isinstance(context, str):
                raise ValueError("question and context must both be strings or both be lists of strings.")
            if isinstance(question, str):
                inputs = {"question": question, "context": context}
            else:
                if len(question) != len(context):
                    raise ValueError(f"{len(question)} questions but {len(context)} contexts: pass one per question.")
                inputs = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
        if (kwargs.get("batch_size") or self._batch_size or 1) > 1:
            raise ValueError(f"{QUESTION_ANSWERING_TASK} runs one example per forward pass: leave batch_size at 1.")
        return super().__call__(inputs, **kwargs)

    def preprocess(self, example: dict, max_seq_len: int | None = None, doc_stride: int = 128) -> dict[str, Any]:
        if not isinstance(example, dict) or not {"question", "context"} <= example.keys():
            raise ValueError(f"Each example needs a 'question' and a 'context', got {example!r}.")
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{QUESTION_ANSWERING_TASK} needs a fast tokenizer: it maps tokens back to characters.")
        question, context = example["question"], example["context"]
        if max_seq_len is None:
            max_seq_len = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        question_length = len(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        # The overlap must leave room for new context in each window: [CLS] question [SEP] context [SEP].
        doc_stride = min(doc_stride, max(0, (max_seq_len - question_length - 3) // 2))
        encoded = self.tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=max_seq_len,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="longest",
            return_tensors="pt",
        )
        # Which tokens of each window belong to the context (sequence 1): the only ones an answer may use.
        context_mask = torch.tensor(
            [[sequence_id == 1 for sequence_id in encoded.sequence_ids(i)] for i in range(len(encoded["input_ids"]))]
        )
        model_inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        # Segment ids only where the model has segment embeddings (fourfold refuses them otherwise).
        if "token_type_ids" in encoded and getattr(self.model.config, "type_vocab_size", 0) > 0:
            model_inputs["token_type_ids"] = encoded["token_type_ids"]
        return {
            "model_inputs": model_inputs,
            "context_mask": context_mask,
            "offsets": encoded["offset_mapping"],
            "context": context,
        }

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        outputs = self.model(**inputs["model_inputs"])
        return {
            "start_logits": outputs.start_logits,
            "end_logits": outputs.end_logits,
            "context_mask": inputs["context_mask"],
            "offsets": inputs["offsets"],
            "context": inputs["context"],
        }

    def postprocess(self, outputs: dict[str, Any], top_k: int = 1, max_answer_length: int = 30) -> dict | list[dict]:
        spans = best_spans(
            outputs["start_logits"].float().cpu(),
            outputs["end_logits"].float().cpu(),
            outputs["context_mask"].cpu(),
            max_answer_length,
            top_k=None,  # all candidates: windows overlap, so the same characters may appear more than once
        )
        answers, seen = [], set()
        offsets, context = outputs["offsets"], outputs["context"]
        for score, window, start_token, end_token in spans:
            start, end = int(offsets[window, start_token, 0]), int(offsets[window, end_token, 1])
            if (start, end) in seen:
                continue
            seen.add((start, end))
            answers.append({"score": score, "start": start, "end": end, "answer": context[start:end]})
            if len(answers) == top_k:
                break
        if not answers:
            answers = [{"score": 0.0, "start": 0, "end": 0, "answer": ""}]  # no context token survived truncation
        return answers[0] if top_k == 1 else answers


def best_spans(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    context_mask: torch.Tensor,
    max_answer_length: int,
    top_k: int | None = 1,
) -> list[tuple[float, int, int, int]]:
    """The best answer spans over a batch of windows, as (score, window, start token, end token), best first.

    A span (i, j) is valid when i <= j < i + max_answer_length and both tokens are context tokens. Its score is
    softmax(start)[i] * softmax(end)[j], each softmax over the window's context tokens. For one window of 4 tokens,
    context = tokens 1..3 and max_answer_length = 2, the valid (i, j) are marked 1:

                j=0 j=1 j=2 j=3
        i=0      0   0   0   0      token 0 is not context
        i=1      0   1   1   0      j < i + 2
        i=2      0   0   1   1
        i=3      0   0   0   1

    Args:
        start_logits / end_logits: (windows, length).
        context_mask: (windows, length), True for context tokens.
        max_answer_length: longest answer, in tokens.
        top_k: how many spans to return; `None` returns every valid span.
    """
    context_mask = context_mask.bool()
    very_negative = torch.finfo(start_logits.dtype).min
    start_log_probs = start_logits.masked_fill(~context_mask, very_negative).log_softmax(-1)  # (W, L)
    end_log_probs = end_logits.masked_fill(~context_mask, very_negative).log_softmax(-1)  # (W, L)
    scores = start_log_probs[:, :, None] + end_log_probs[:, None, :]  # (W, L_start, L_end)
    length = scores.shape[-1]
    ones = torch.ones(length, length, dtype=torch.bool)
    in_range = ones.triu() & ~ones.triu(max_answer_length)  # i <= j < i + max_answer_length
    valid = in_range & context_mask[:, :, None] & context_mask[:, None, :]  # (W, L, L)
    flat_scores = scores.masked_fill(~valid, -torch.inf).flatten()
    count = int(valid.sum()) if top_k is None else min(top_k, int(valid.sum()))
    best = flat_scores.topk(count)
    spans = []
    for log_score, index in zip(best.values.tolist(), best.indices.tolist(), strict=True):
        window, rest = divmod(index, length * length)
        spans.append((math.exp(log_score), window, *divmod(rest, length)))
    return spans


def register_pipelines() -> None:
    """Registers both pipelines with transformers' `PIPELINE_REGISTRY`, so `pipeline("fourfold-text2text", ...)`
    works once fourfold is imported. The first registration stands: a second copy of this module (the same file
    imported under another package name) must not replace the classes callers already hold."""
    for task, pipeline_class, auto_class in (
        (TEXT2TEXT_TASK, FourfoldText2TextPipeline, AutoModelForSeq2SeqLM),
        (QUESTION_ANSWERING_TASK, FourfoldQuestionAnsweringPipeline, AutoModelForQuestionAnswering),
    ):
        if task not in PIPELINE_REGISTRY.supported_tasks:
            PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=auto_class, type="text")


# The custom pipeline a checkpoint ships, by its architecture (config.architectures[0]): the seq2seq generator gets
# text2text, the encoder QA head gets question answering. The others use transformers' own pipelines.
CUSTOM_PIPELINES: dict[str, tuple[str, type[Pipeline], str]] = {
    "FourfoldSeq2SeqForConditionalGeneration": (TEXT2TEXT_TASK, FourfoldText2TextPipeline, "AutoModelForSeq2SeqLM"),
    "FourfoldEncoderForQuestionAnswering": (
        QUESTION_ANSWERING_TASK,
        FourfoldQuestionAnsweringPipeline,
        "AutoModelForQuestionAnswering",
    ),
}


def hub_config_with_pipelines(config: dict) -> dict:
    """A copy of a checkpoint's config.json dict with `custom_pipelines` added for its architecture (if it has one).

    This is the entry `Pipeline.save_pretrained` would write for a registered pipeline: with it, `pipeline(task,
    model=repo, trust_remote_code=True)` loads the class from this module's copy inside the checkpoint. It goes into
    the uploaded config only: locally, with fourfold imported, a `custom_pipelines` entry would shadow the registered
    pipeline and demand `trust_remote_code=True`.
    """
    config = dict(config)
    architectures = config.get("architectures") or []
    entry = CUSTOM_PIPELINES.get(architectures[0]) if architectures else None
    if entry is not None:
        task, pipeline_class, auto_class = entry
        impl = f"{__name__.split('.')[-1]}.{pipeline_class.__name__}"
        config["custom_pipelines"] = {task: {"impl": impl, "pt": [auto_class], "type": "text"}}
    return config
