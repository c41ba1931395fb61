"""Pipelines that transformers 5.x no longer ships, for the fourfold models that need them.

transformers 5 removed `text2text-generation` (and `summarization`, `translation`) and `question-answering`; the
tasks fourfold's seq2seq and encoder-QA models exist for. Two small replacements, registered under their own names:

    fourfold-text2text           seq2seq generation, text in and text out       (AutoModelForSeq2SeqLM)
    fourfold-question-answering  extractive QA with a start/end head: the best  (AutoModelForQuestionAnswering)
                                 span of the context, mapped back to characters via token offsets
                                 (windows and decoding: question_answering.py)

`import fourfold` registers them (`register_pipelines`). This module also travels to the Hub with every checkpoint
(it imports only torch, transformers and the standard library), and `hub_config_with_pipelines` names it in a
checkpoint's `custom_pipelines`, so `pipeline(task, model=repo, trust_remote_code=True)` works without fourfold.
The other tasks (fill-mask, text-generation, feature-extraction, text-/token-classification) are transformers' own.
"""

from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM, GenerationConfig, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .question_answering import context_room, decode_answers, question_windows

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
    `{"answer", "score", "start", "end"}`: the context span `context[start:end]` whose first token's start logit plus
    last token's end logit is highest, with start <= end and at most `max_answer_length` tokens; `top_k > 1` returns
    a list of the best answers. A context longer than `max_seq_len` is read in overlapping windows (`doc_stride`
    tokens of overlap; by default half the room the question leaves, at most 128) and the best span of any window
    wins. `score` is the answer's probability among all candidate spans of the example. `handle_impossible_answer`
    (or a `null_score_diff_threshold`, default 0.0) lets "no answer" ("") compete, as SQuAD v2 scores it. Decoding
    is `question_answering.decode_answers`, the same as the training code's evaluation.

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
        handle_impossible_answer: bool | None = None,
        null_score_diff_threshold: float | None = None,
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
        if handle_impossible_answer is False and null_score_diff_threshold is not None:
            raise ValueError(
                "null_score_diff_threshold sets the margin of the 'no answer' candidate, which "
                "handle_impossible_answer=False turns off: drop one of the two."
            )
        if handle_impossible_answer or null_score_diff_threshold is not None:
            postprocess_params["null_score_diff_threshold"] = null_score_diff_threshold or 0.0
        elif handle_impossible_answer is False:
            postprocess_params["null_score_diff_threshold"] = None
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

    def preprocess(
        self, example: dict, max_seq_len: int | None = None, doc_stride: int | None = None
    ) -> dict[str, Any]:
        if not isinstance(example, dict) or not {"question", "context"} <= example.keys():
            raise ValueError(f"Each example needs a 'question' and a 'context', got {example!r}.")
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{QUESTION_ANSWERING_TASK} needs a fast tokenizer: it maps tokens back to characters.")
        question, context = example["question"], example["context"]
        if max_seq_len is None:
            max_seq_len = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        if doc_stride is None:  # the default, not a clamp: a given doc_stride that does not fit is an error
            doc_stride = min(128, max(0, context_room(self.tokenizer, question, max_seq_len) // 2))
        windows = question_windows(
            self.tokenizer,
            question,
            context,
            max_length=max_seq_len,
            doc_stride=doc_stride,
            argument_names=("doc_stride", "max_seq_len"),
            padding="longest",
            return_tensors="pt",
        )
        encoded = windows.encoding
        model_inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        # Segment ids only where the model has segment embeddings (fourfold refuses them otherwise).
        if "token_type_ids" in encoded and getattr(self.model.config, "type_vocab_size", 0) > 0:
            model_inputs["token_type_ids"] = encoded["token_type_ids"]
        return {"model_inputs": model_inputs, "offsets": windows.offsets, "context": context}

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        outputs = self.model(**inputs["model_inputs"])
        return {
            "start_logits": outputs.start_logits,
            "end_logits": outputs.end_logits,
            "offsets": inputs["offsets"],
            "context": inputs["context"],
        }

    def postprocess(
        self,
        outputs: dict[str, Any],
        top_k: int = 1,
        max_answer_length: int = 30,
        null_score_diff_threshold: float | None = None,
    ) -> dict | list[dict]:
        answers = decode_answers(
            outputs["start_logits"],
            outputs["end_logits"],
            outputs["offsets"],
            outputs["context"],
            max_answer_length=max_answer_length,
            top_k=top_k,
            null_score_diff_threshold=null_score_diff_threshold,
        )
        answers = [{"score": a.score, "start": a.start, "end": a.end, "answer": a.text} for a in answers]
        return answers[0] if top_k == 1 else answers


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
