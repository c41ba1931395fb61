"""Model cards for fourfold checkpoints, written from the files that training leaves in its output folder.

`write_model_card(output_dir, **overrides)` reads what is there and renders `model_card.jinja` (a model) or
`adapter_card.jinja` (a PEFT adapter) with huggingface_hub's `ModelCard.from_template`, into `output_dir/README.md`:

    config.json             configuration, sizes, labels                      (model.save_pretrained)
    *.safetensors           parameter count (stored tensors; tied ones once)  (save_pretrained)
    tokenizer.json          tokenizer algorithm, vocabulary, special tokens   (tokenizer.save_pretrained)
    adapter_config.json     adapters: method, rank, targets, base model      (PeftModel.save_pretrained)
    trainer_state.json      steps, epochs, batch size, losses                 (Trainer.save_state)
    run_arguments.json      training data and recipe                          (write_model_card(run_arguments=...))
    *results.json           evaluation metrics                                (Trainer.save_metrics, fine-tuning)
    conversion.json         the source of a converted checkpoint              (fourfold convert)
    loss_curve.png          embedded when present                             (fourfold pretrain)

Nothing in a card is typed by hand: a fact missing from the folder is left out (or said to be unknown), and the few
things no file can know (license, language, a Hub id for a local base model) are `overrides`. The training commands'
Trainer (`fourfold.training.trainer.FourfoldTrainer`) makes `Trainer.push_to_hub` write this card instead of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from fourfold.training.architectures import OBJECTIVE_OPTIONS, architecture_of

TEMPLATES = Path(__file__).parent
MARKER = "<!-- written by fourfold.hub_cards.write_model_card -->"
# The card's last line: the digest of everything above it, which tells an edited card from ours (`card_is_unedited`).
STAMP = "<!-- fourfold card sha256:{digest} -->"
_STAMP = re.compile(r"<!-- fourfold card sha256:([0-9a-f]{64}) -->")
RUN_ARGUMENTS = "run_arguments.json"
LOSS_CURVE = "loss_curve.png"
# Metric files in the order they are read; a later file's value for the same metric wins.
RESULT_FILES = ("all_results.json", "eval_results.json", "test_results.json", "results.json")
DEFAULT_LICENSE = "apache-2.0"  # fourfold's own license; pass license= when the data or base model says otherwise
REVISION_PLACEHOLDER = "<commit-sha>"


# The Hub task of each head (by class-name suffix), and the Auto class that loads it.
HEADS: dict[str, tuple[str, str]] = {
    "ForMaskedLM": ("fill-mask", "AutoModelForMaskedLM"),
    "ForCausalLM": ("text-generation", "AutoModelForCausalLM"),
    "ForConditionalGeneration": ("text2text-generation", "AutoModelForSeq2SeqLM"),
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "ForQuestionAnswering": ("question-answering", "AutoModelForQuestionAnswering"),
    "ForMultipleChoice": ("multiple-choice", "AutoModelForMultipleChoice"),
    "Seq2SeqEncoderModel": ("feature-extraction", "AutoModelForTextEncoding"),
    "Model": ("feature-extraction", "AutoModel"),
}
# The `pipeline(...)` task that runs each Hub task; transformers 5 dropped two, fourfold ships them (pipelines.py).
PIPELINE_TASKS = {"text2text-generation": "fourfold-text2text", "question-answering": "fourfold-question-answering"}
# PEFT task types, for adapters: (Hub task, Auto class of the base model).
PEFT_TASKS = {
    "CAUSAL_LM": ("text-generation", "AutoModelForCausalLM"),
    "SEQ_2_SEQ_LM": ("text2text-generation", "AutoModelForSeq2SeqLM"),
    "SEQ_CLS": ("text-classification", "AutoModelForSequenceClassification"),
    "TOKEN_CLS": ("token-classification", "AutoModelForTokenClassification"),
    "QUESTION_ANS": ("question-answering", "AutoModelForQuestionAnswering"),
    "FEATURE_EXTRACTION": ("feature-extraction", "AutoModel"),
}

# The recipe, as the card lists it: (run argument, label). The first name found in run_arguments.json is shown.
RECIPE_FIELDS = (
    ("max_steps", "max steps"),
    ("num_train_epochs", "epochs"),
    ("per_device_train_batch_size", "batch size per device"),
    ("gradient_accumulation_steps", "gradient accumulation"),
    ("learning_rate", "learning rate"),
    ("lr_scheduler_type", "schedule"),
    ("warmup_steps", "warmup steps"),
    ("warmup_ratio", "warmup ratio"),
    ("weight_decay", "weight decay"),
    ("optim", "optimizer"),
    ("bf16", "bf16"),
    ("fp16", "fp16"),
    ("seed", "seed"),
    ("block_size", "tokens per row"),
    ("packing", "packing"),
    ("objective", "objective"),
    ("mlm_probability", "masking probability"),
    ("whole_word_mask", "whole-word masking"),
    ("prefix_fraction", "prefix fraction"),
    ("noise_density", "noise density"),
    ("mean_noise_span_length", "mean noise span"),
)
# Bookkeeping numbers that Trainer reports next to metrics.
_NOT_METRICS = re.compile(r"(runtime|per_second|preparation_time|flos|epoch|mem_|_mem|num_tokens)")
# Metric-key prefixes (Trainer's `metric_key_prefix`) and the split each names.
_SPLIT_PREFIXES = (
    ("eval_before_", "validation, before training"),
    ("eval_", "validation"),
    ("test_", "test"),
    ("predict_", "test"),
    ("baseline_", None),  # finetune's majority-class baseline: the section names the split
)
_RESULT_SECTIONS = {
    "metrics": "validation",
    "metrics_before": "validation, before training",
    "baseline": "validation, majority-class baseline",
    "validation": "validation",
    "eval": "validation",
    "test": "test",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --------------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------------


def write_model_card(output_dir: str | Path, run_arguments: tuple | list | None = None, **overrides: Any) -> Path:
    """Writes `output_dir/README.md` from the folder's files and returns its path.

    Args:
        output_dir: a folder written by `fourfold pretrain` / `finetune` / `convert` (or any fourfold
            `save_pretrained`), or a PEFT adapter folder.
        run_arguments: the parsed argument dataclasses of the run (e.g. `(model_args, data_args, training_args)`);
            saved as `run_arguments.json` and read back for the data and recipe sections.
        **overrides: `model_name`, `license`, `language`, `tags` (added to fourfold's), `datasets`, `base_model`,
            `repo_id` and `revision` (pinned in the loading example), `pipeline_tag`.
    """
    output_dir = Path(output_dir)
    if run_arguments is not None:
        save_run_arguments(output_dir, *run_arguments)
    path = output_dir / "README.md"
    text = str(render_model_card(output_dir, **overrides)) + "\n"
    path.write_text(text + STAMP.format(digest=_digest(text)) + "\n", encoding="utf-8")
    return path


def card_is_unedited(path: str | Path) -> bool:
    """Whether `path` is a card exactly as `write_model_card` wrote it: its last line stamps the digest of the rest,
    so any edit (or a card written by something else) reads as edited, and `push` keeps it."""
    path = Path(path)
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    body, _, last = text.rstrip("\n").rpartition("\n")
    match = _STAMP.fullmatch(last)
    return match is not None and match.group(1) == _digest(body + "\n")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def render_model_card(output_dir: str | Path, **overrides: Any) -> ModelCard:
    """The card for `output_dir` (see `write_model_card`), without writing it."""
    output_dir = Path(output_dir)
    unknown = set(overrides) - {
        "model_name",
        "license",
        "language",
        "tags",
        "datasets",
        "base_model",
        "repo_id",
        "revision",
        "pipeline_tag",
    }
    if unknown:
        raise TypeError(f"Unknown card overrides {sorted(unknown)}; see write_model_card's docstring.")
    facts = collect_facts(output_dir, overrides)
    card_data = ModelCardData(
        model_name=facts["model_name"],
        library_name=facts["library_name"],
        pipeline_tag=facts["pipeline_tag"],
        license=overrides.get("license", DEFAULT_LICENSE),
        language=overrides.get("language"),
        tags=facts["tags"],
        datasets=facts["datasets"] or None,
        base_model=facts["base_model"],
        eval_results=facts["eval_results"] or None,
    )
    template = "adapter_card.jinja" if facts["adapter"] else "model_card.jinja"
    return ModelCard.from_template(card_data, template_path=str(TEMPLATES / template), marker=MARKER, **facts)


def save_run_arguments(output_dir: str | Path, *arguments: Any) -> Path:
    """Saves argument dataclasses (`TrainingArguments` included, tokens hidden) as `run_arguments.json`, one
    section per class, for the card's data and recipe sections."""
    sections = {}
    for argument in arguments:
        values = argument.to_dict() if hasattr(argument, "to_dict") else dataclasses.asdict(argument)
        sections[type(argument).__name__] = {k: v for k, v in values.items() if not k.endswith("_token")}
    path = Path(output_dir) / RUN_ARGUMENTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sections, indent=2, default=str) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Facts from the folder
# --------------------------------------------------------------------------------------------------------------------


def collect_facts(output_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Everything the templates show, as plain values."""
    config = read_json(output_dir / "config.json") or {}
    adapter = adapter_facts(output_dir)
    run = run_arguments(output_dir)
    conversion = read_json(output_dir / "conversion.json")
    if adapter and not config:  # describe the adapter's base model, when its folder is at hand
        for base in (adapter["base_model"], run.get("model_name_or_path"), overrides.get("base_model")):
            if base and (Path(base) / "config.json").is_file():
                config = read_json(Path(base) / "config.json")
                break
    model_type = config.get("model_type")
    architecture = architecture_of(model_type)
    class_name = (config.get("architectures") or [None])[0]
    pipeline_tag, auto_class = head_of(class_name)
    if adapter:  # the adapter's task, not the base checkpoint's head
        pipeline_tag, auto_class = PEFT_TASKS.get(adapter["task_type"], (pipeline_tag, auto_class))
    pipeline_tag = overrides.get("pipeline_tag", pipeline_tag)

    base_model, base_model_note = resolve_base_model(
        overrides.get("base_model")
        or (adapter or {}).get("base_model")
        or (conversion or {}).get("base_model")
        or run.get("model_name_or_path")
    )
    datasets = list(overrides.get("datasets") or ([run["dataset_name"]] if run.get("dataset_name") else []))
    model_name = overrides.get("model_name") or (overrides.get("repo_id") or output_dir.resolve().name).split("/")[-1]
    evaluation = read_metrics(output_dir)
    finetune = read_json(output_dir / "results.json") or {}
    tags = ["fourfold", *([model_type] if model_type else []), *(adapter["tags"] if adapter else [])]
    tags += [tag for tag in overrides.get("tags") or [] if tag not in tags]
    return {
        "model_name": model_name,
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": pipeline_tag,
        "tags": tags,
        "datasets": datasets,
        "base_model": base_model,
        "base_model_note": base_model_note,
        "eval_results": eval_results(evaluation, pipeline_tag, datasets, run),
        "configuration": dataclasses.asdict(architecture.card) if architecture else None,
        "model_type": model_type,
        "class_name": class_name,
        "architecture": architecture_rows(config),
        "labels": list((config.get("id2label") or {}).values()) if "Classification" in (class_name or "") else [],
        "parameters": format_count(count_parameters(output_dir)),
        "tokenizer": tokenizer_facts(output_dir),
        "training": training_facts(output_dir, run, model_type),
        "evaluation": evaluation,
        "loss_curve": LOSS_CURVE if (output_dir / LOSS_CURVE).is_file() else None,
        "conversion": conversion,
        "finetune": {"task": finetune["task"], "method": finetune.get("method")} if "task" in finetune else None,
        "adapter": adapter,
        "usage": usage_facts(pipeline_tag, auto_class, overrides),
        "code": code_facts(config),
    }


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def head_of(class_name: str | None) -> tuple[str | None, str | None]:
    """(Hub task, Auto class) of a fourfold class name, from its suffix."""
    for suffix, head in HEADS.items():
        if class_name and class_name.endswith(suffix):
            return head
    return None, None


def resolve_base_model(name: str | None) -> tuple[str | None, str | None]:
    """A base model goes into the metadata only as a Hub id; a local folder or a preset is named in the text."""
    from fourfold.configuration import preset_names

    if not name:
        return None, None
    if name in preset_names() and not Path(name).exists():
        return None, f"a freshly initialised `{name}` model (a fourfold preset, not pretrained)"
    if _HUB_ID.match(name) and not Path(name).exists():
        return name, None
    return None, f"the local checkpoint `{name}` (pass base_model='owner/name' to link its Hub repository)"


def architecture_rows(config: dict) -> list[tuple[str, str]]:
    """The architecture table: only the fields config.json has."""
    if not config:
        return []
    heads = config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads")
    rows = [
        ("layers", config.get("num_hidden_layers")),
        ("decoder layers", config.get("num_decoder_layers")),
        ("hidden size", config.get("hidden_size")),
        ("attention heads", f"{heads} ({kv_heads} key/value)" if kv_heads and kv_heads != heads else heads),
        ("head dim", config.get("head_dim")),
        ("MLP", f"{config.get('mlp_type')} {config.get('hidden_act')}, width {config.get('intermediate_size')}"),
        ("norm", f"{config.get('norm_position')}-norm {config.get('norm_type')}"),
        ("positions", config.get("position_embedding_type")),
        ("max positions", config.get("max_position_embeddings")),
        ("vocabulary (embedding rows)", config.get("vocab_size")),
        ("tied input/output embeddings", config.get("tie_word_embeddings")),
    ]
    return [(label, str(value)) for label, value in rows if value is not None and "None" not in str(value)]


def count_parameters(output_dir: Path) -> int | None:
    """Parameters stored in the folder's safetensors files (model or adapter), from their headers only. Tied
    weights are stored once, so this is the number of distinct parameters."""
    from safetensors import safe_open

    files = sorted(output_dir.glob("model*.safetensors")) or sorted(output_dir.glob("adapter_model*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as tensors:
            for name in tensors.keys():
                count = 1
                for dim in tensors.get_slice(name).get_shape():
                    count *= dim
                total += count
    return total


def format_count(count: int | None) -> str | None:
    if count is None:
        return None
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit} ({count:,})"
    return f"{count:,}"


def tokenizer_facts(output_dir: Path) -> dict | None:
    """Algorithm, byte-level or not, vocabulary size and special tokens, from tokenizer.json (+ its config)."""
    tokenizer = read_json(output_dir / "tokenizer.json")
    if tokenizer is None:
        return None
    model = tokenizer.get("model", {})
    vocab = model.get("vocab") or {}
    tokens = {entry[0] for entry in vocab} if isinstance(vocab, list) else set(vocab)  # Unigram: [token, score]
    added = tokenizer.get("added_tokens", [])
    special = [token["content"] for token in added if token.get("special")]
    sentinels = [token for token in special if token.startswith("<extra_id_")]
    return {
        "algorithm": model.get("type", "unknown"),
        "byte_level": "ByteLevel" in json.dumps(tokenizer.get("pre_tokenizer")),
        "vocab_size": len(tokens | {token["content"] for token in added}),
        "special_tokens": [token for token in special if token not in sentinels],
        "sentinels": len(sentinels),
    }


def run_arguments(output_dir: Path) -> dict[str, Any]:
    """The run's arguments as one mapping (names are unique across a run's dataclasses): run_arguments.json, else
    the `arguments` section of fourfold finetune's results.json (whose training values are strings)."""
    sections = read_json(output_dir / RUN_ARGUMENTS) or (read_json(output_dir / "results.json") or {}).get("arguments")
    flat = {}
    for values in (sections or {}).values():
        if isinstance(values, dict):
            flat.update({name: _parse(value) for name, value in values.items()})
    return flat


def _parse(value: Any) -> Any:
    """A value that was written with str(): "0.001" -> 0.001, "True" -> True; anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return {"True": True, "False": False, "None": None}.get(value, value)


def training_facts(output_dir: Path, run: dict[str, Any], model_type: str | None) -> dict | None:
    """Data, recipe and outcome of training, from run_arguments.json and trainer_state.json."""
    state = read_json(output_dir / "trainer_state.json")
    if state is None and not run:
        return None
    data = []
    if run.get("dataset_name"):
        config_name = f" (configuration `{run['dataset_config_name']}`)" if run.get("dataset_config_name") else ""
        data.append(f"[{run['dataset_name']}](https://huggingface.co/datasets/{run['dataset_name']}){config_name}")
    else:
        data += [f"`{Path(file).name}` (local file)" for file in run.get("train_files") or []]
    if run.get("validation_files"):
        data += [f"`{Path(file).name}` (local validation file)" for file in run["validation_files"]]
    elif run.get("validation_split_percentage") and data:
        data.append(f"{run['validation_split_percentage']}% of the training data held out for validation")

    recipe = [(label, run[name]) for name, label in RECIPE_FIELDS if _shown(name, run, model_type)]
    if state:
        recipe.append(("effective batch size", _effective_batch(state, run)))
        recipe += [("steps trained", state.get("global_step")), ("epochs trained", _round(state.get("epoch")))]
    losses = [entry for entry in (state or {}).get("log_history", []) if "loss" in entry]
    final = next((entry for entry in reversed((state or {}).get("log_history", [])) if "train_loss" in entry), {})
    outcome = []
    if losses:
        outcome.append(("last logged training loss", f"{losses[-1]['loss']:.4f} (step {losses[-1].get('step')})"))
    if "train_loss" in final:
        outcome.append(("mean training loss", f"{final['train_loss']:.4f}"))
    if state and state.get("total_flos"):
        outcome.append(("training compute", f"{state['total_flos']:.3g} FLOs"))
    return {
        "data": data,
        "recipe": [(label, _round(value)) for label, value in recipe if value is not None],
        "outcome": outcome,
    }


def _shown(name: str, run: dict[str, Any], model_type: str | None) -> bool:
    """Whether the recipe lists run argument `name`: set, meaningful for this run, and not a no-op default."""
    value = run.get(name)
    if value is None or value is False or value in ("", []):
        return False
    if name == "num_train_epochs" and (run.get("max_steps") or -1) > 0:
        return False  # max_steps wins over epochs
    if name == "max_steps" and value <= 0:
        return False
    if name in ("warmup_steps", "warmup_ratio", "weight_decay") and value == 0:
        return False
    if name == "gradient_accumulation_steps" and value == 1:
        return False
    return name not in OBJECTIVE_OPTIONS or name in objective_options(model_type, run.get("objective"))


def objective_options(model_type: str | None, objective: str | None) -> tuple[str, ...]:
    """The pretraining-objective arguments the run's objective read (a run records all of them)."""
    architecture = architecture_of(model_type)
    names = [o.name for o in architecture.objectives] if architecture else []
    return architecture.objective(objective).options if objective in names else ()


def _effective_batch(state: dict, run: dict[str, Any]) -> int | None:
    batch = state.get("train_batch_size")
    return batch * (run.get("gradient_accumulation_steps") or 1) if batch else None


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def read_metrics(output_dir: Path) -> list[dict[str, Any]]:
    """Metrics of every results file, as rows {split, metric, value}. Trainer's files hold split-prefixed keys
    (`eval_x` validation, `test_x` test, `eval_before_x` before training); fourfold finetune's results.json nests them
    in sections (`metrics`, `metrics_before`, `baseline`). Unprefixed top-level numbers are run facts, not metrics."""
    merged: dict[tuple[str, str], float] = {}
    for file_name in RESULT_FILES:
        for key, value in (read_json(output_dir / file_name) or {}).items():
            if isinstance(value, dict):
                if key in _RESULT_SECTIONS:
                    for metric, number in value.items():
                        _add_metric(merged, _RESULT_SECTIONS[key], metric, number)
            else:
                _add_metric(merged, None, key, value)
    return [{"split": split, "metric": metric, "value": value} for (split, metric), value in merged.items()]


def _add_metric(merged: dict, split: str | None, key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for prefix, name in _SPLIT_PREFIXES:
        if key.startswith(prefix):
            split, key = name or split, key[len(prefix) :]
            break
    if split is not None and not _NOT_METRICS.search(key):
        merged[split, key] = round(float(value), 4)


def eval_results(
    evaluation: list[dict[str, Any]], pipeline_tag: str | None, datasets: list[str], run: dict[str, Any]
) -> list[EvalResult]:
    """model-index entries: the final validation and test metrics (not the before-training ones)."""
    if not pipeline_tag:
        return []
    if datasets:
        dataset_type = dataset_name = datasets[0]
    else:
        files = [Path(file).name for file in run.get("train_files") or []]
        dataset_type, dataset_name = "custom", ", ".join(files) or "custom"
    return [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_config=run.get("dataset_config_name"),
            dataset_split=row["split"],
            metric_type=row["metric"],
            metric_value=row["value"],
        )
        for row in evaluation
        if row["split"] in ("validation", "test")
    ]


def adapter_facts(output_dir: Path) -> dict | None:
    """A PEFT adapter folder: its method and settings, the base model and (when readable) the base's config."""
    adapter = read_json(output_dir / "adapter_config.json")
    if adapter is None:
        return None
    method = adapter.get("peft_type", "unknown")
    settings = [
        (name, adapter[name])
        for name in ("r", "lora_alpha", "lora_dropout", "num_virtual_tokens", "target_modules", "modules_to_save")
        if adapter.get(name) not in (None, [], "")
    ]
    targets = adapter.get("target_modules")
    return {
        "method": method,
        "task_type": adapter.get("task_type"),
        "base_model": adapter.get("base_model_name_or_path"),
        "settings": [(name, ", ".join(sorted(set(v))) if isinstance(v, list) else v) for name, v in settings],
        "targets": targets,
        "tags": ["peft", str(method).lower()],
    }


def code_facts(config: dict) -> dict | None:
    """Which fourfold code the checkpoint carries and the transformers releases it was tested with (written into
    config.json by `save_pretrained`), and the transformers release that saved it."""
    record = config.get("fourfold")
    if not isinstance(record, dict):
        return None
    return {
        "version": record.get("version"),
        "transformers": record.get("transformers"),
        "saved_with": config.get("transformers_version"),
    }


def usage_facts(pipeline_tag: str | None, auto_class: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """What the loading example needs: repo id, pinned revision, Auto class and pipeline task."""
    return {
        "repo_id": overrides.get("repo_id") or "<owner>/<name>",
        "revision": overrides.get("revision") or REVISION_PLACEHOLDER,
        "pinned": bool(overrides.get("revision")),
        "auto_class": auto_class or "AutoModel",
        "task": PIPELINE_TASKS.get(pipeline_tag, pipeline_tag),
    }
