"""PEFT on the four configurations: default targets registered by model type, only adapters and heads train, merged
equals unmerged, adapter-only checkpoints round-trip, and the prompt-learning methods drive the models' inputs and
KV-cache path (prefix tuning on the bidirectional encoder included)."""

import pytest
import torch
from finetune_helpers import (
    finetune,
    multiple_choice_rows,
    prompt_completion_rows,
    question_answering_rows,
    sequence_classification_rows,
    text_to_text_rows,
    tiny_checkpoints,  # noqa: F401  (session fixture)
    token_classification_rows,
    write_jsonl,
)
from peft import AutoPeftModelForSequenceClassification, IA3Config, LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.cache_utils import DynamicCache

from fourfold.configuration import get_config
from fourfold.training.finetune import finetune_job
from fourfold.training.peft_support import (
    FOURFOLD_MODEL_TYPES,
    LORA_TARGET_MODULES,
    check_target_modules,
    head_modules,
    register_peft_defaults,
)
from tests.conftest import ARCHITECTURES


def peft_trainable(name: str) -> bool:
    return "lora_" in name or "ia3_" in name or "modules_to_save" in name or "prompt_encoder" in name


# --------------------------------------------------------------------------------------------------------------------
# Defaults registered with PEFT
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_lora_defaults_need_no_target_modules(architecture):
    """`LoraConfig()` with no targets adapts every attention and MLP projection (cross-attention too)."""
    register_peft_defaults()
    model = AutoModelForSequenceClassification.from_config(get_config(f"{architecture}-tiny", vocab_size=101))
    adapted = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=2))
    wrapped = {name.rsplit(".", 1)[-1] for name, m in adapted.named_modules() if hasattr(m, "lora_A")}
    expected = {
        name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name.endswith(tuple(LORA_TARGET_MODULES))
    }
    assert wrapped == set(LORA_TARGET_MODULES) == expected
    linear = [n for n, m in model.named_modules() if n.endswith(tuple(LORA_TARGET_MODULES))]
    assert sum(hasattr(m, "lora_A") for _, m in adapted.named_modules()) == len(linear)


def test_ia3_defaults_are_registered():
    register_peft_defaults()
    model = AutoModelForSequenceClassification.from_config(get_config("decoder-tiny", vocab_size=101))
    adapted = get_peft_model(model, IA3Config(task_type="SEQ_CLS"))
    wrapped = sorted({n.rsplit(".", 1)[-1] for n, m in adapted.named_modules() if hasattr(m, "ia3_l")})
    assert wrapped == ["down_proj", "k_proj", "v_proj"]


def test_every_model_type_is_in_peft_tables():
    import peft.utils.constants as constants

    register_peft_defaults()
    for model_type in FOURFOLD_MODEL_TYPES:
        assert constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type] == LORA_TARGET_MODULES
        assert constants.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[model_type] == ["down_proj"]


def test_target_check_names_the_layers():
    model = AutoModelForSequenceClassification.from_config(get_config("encoder-tiny", vocab_size=101))
    check_target_modules(model, ["q_proj", "self_attn.v_proj"])
    with pytest.raises(ValueError, match=r"match no linear or embedding layer.*embed_tokens, gate_proj, k_proj"):
        check_target_modules(model, ["c_attn"])


def test_the_head_trained_beside_an_adapter_is_the_one_with_weights():
    """A mean pooler has no weights: LoRA saves the classifier alone with the adapter; BERT's pooler trains too."""
    register_peft_defaults()
    for pooling, expected in (("cls", ["classifier", "pooler"]), ("mean", ["classifier"])):
        config = get_config("encoder-tiny", vocab_size=101, classifier_pooling=pooling)
        model = AutoModelForSequenceClassification.from_config(config)
        assert head_modules(model) == expected
        adapted = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=2, modules_to_save=head_modules(model)))
        trained = {
            n.split(".modules_to_save")[0].rsplit(".", 1)[-1]
            for n, p in adapted.named_parameters()
            if p.requires_grad and "modules_to_save" in n
        }
        assert sorted(trained) == expected


# --------------------------------------------------------------------------------------------------------------------
# Training through `fourfold finetune`
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_lora_trains_only_adapters_and_head(tiny_checkpoints, tmp_path, architecture):  # noqa: F811
    checkpoint = tiny_checkpoints[architecture]
    data = write_jsonl(tmp_path / "data.jsonl", sequence_classification_rows(48))
    args = ["--model_name_or_path", str(checkpoint), "--train_files", data, "--method", "lora"]
    results, trainer = finetune_job(quick(tmp_path / "out", *args, steps=10))
    model = trainer.model
    assert isinstance(model, PeftModel)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(peft_trainable(n) for n in trained)
    assert any("lora_B" in n for n in trained) and any("modules_to_save" in n for n in trained)
    # Every base weight is bit-identical to the checkpoint's.
    original = load_file(checkpoint / "model.safetensors")
    base = model.get_base_model().state_dict()
    compared = 0
    for name, tensor in base.items():
        plain = name.replace(".base_layer", "")
        if peft_trainable(name) or "original_module" in name or plain not in original:
            continue
        assert torch.equal(tensor, original[plain]), name
        compared += 1
    assert compared > 10
    # The adapter moved away from its identity start (lora_B starts at zero), and the share is reported.
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    share = results["parameters"]["trainable"] / results["parameters"]["total"]
    assert 0 < share < 0.5 and results["parameters"]["trainable_percent"] == pytest.approx(100 * share)


@pytest.mark.parametrize(
    ("architecture", "method", "targets"),
    [
        ("encoder", "lora", [*LORA_TARGET_MODULES, "embed_tokens"]),  # as the spam LoRA recipe
        ("decoder", "dora", []),
        ("decoder", "ia3", []),
        ("seq2seq", "lora", []),
    ],
)
def test_merged_equals_adapter_and_round_trips(tiny_checkpoints, tmp_path, architecture, method, targets):  # noqa: F811
    data = write_jsonl(tmp_path / "data.jsonl", sequence_classification_rows(48))
    args = ["--model_name_or_path", str(tiny_checkpoints[architecture]), "--train_files", data, "--method", method]
    args += ["--target_modules", *targets] if targets else []
    results = finetune(tmp_path / "out", *args, "--merge", "true", steps=10)
    out = tmp_path / "out"
    assert results["merged"]["max_abs_diff"] < 1e-4
    # The adapter folder holds only the adapter (and head): much smaller than the full merged model.
    adapter_bytes = (out / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < 0.5 * (out / "merged" / "model.safetensors").stat().st_size
    assert not (out / "model.safetensors").exists()
    # Reload both ways and compare on real text.
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["the whale Ahab sea", "rope deck"], padding=True, return_tensors="pt")
    adapter_model = AutoPeftModelForSequenceClassification.from_pretrained(out).eval()
    merged_model = AutoModelForSequenceClassification.from_pretrained(out / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(adapter_model(**batch).logits, merged_model(**batch).logits, atol=1e-5, rtol=1e-4)
    assert merged_model.config.id2label == {0: "person", 1: "thing"}


@pytest.mark.parametrize(
    ("architecture", "task", "method", "rows"),
    [
        ("encoder", "sequence-classification", "ia3", sequence_classification_rows),
        ("encoder", "sequence-classification", "prompt-tuning", sequence_classification_rows),
        ("encoder", "sequence-classification", "prefix-tuning", sequence_classification_rows),
        ("decoder", "sequence-classification", "prefix-tuning", sequence_classification_rows),
        ("decoder", "causal-lm", "ia3", prompt_completion_rows),
        ("decoder", "causal-lm", "prompt-tuning", prompt_completion_rows),
        ("decoder", "causal-lm", "prefix-tuning", prompt_completion_rows),
        ("prefix-lm", "causal-lm", "lora", prompt_completion_rows),
        ("seq2seq", "text-to-text", "lora", text_to_text_rows),
        ("encoder", "question-answering", "lora", question_answering_rows),
        ("encoder", "multiple-choice", "lora", multiple_choice_rows),
        ("decoder", "token-classification", "lora", token_classification_rows),
    ],
)
def test_peft_methods_learn(tiny_checkpoints, tmp_path, architecture, task, method, rows):  # noqa: F811
    data = write_jsonl(tmp_path / "data.jsonl", rows(64))
    args = ["--model_name_or_path", str(tiny_checkpoints[architecture]), "--task", task, "--train_files", data]
    # The usual learning rates: rescaling vectors and virtual tokens move slowly and take large steps.
    learning_rate = {"lora": "5e-3", "ia3": "3e-2", "prompt-tuning": "1e-1", "prefix-tuning": "3e-2"}[method]
    args += ["--method", method, "--learning_rate", learning_rate]
    args += {
        "text-to-text": ["--predict_with_generate", "true"],
        "multiple-choice": ["--text_column", "question"],
        "token-classification": ["--text_column", "tokens", "--label_column", "tags"],
    }.get(task, [])
    results, trainer = finetune_job(quick(tmp_path / "out", *args, "--logging_steps", "10", steps=40))
    # The training loss falls (first 10 steps vs last 10). The base is frozen and random, so little can be learnt:
    # the held-out loss of the classification runs is too noisy a bar; the generative runs must improve it too.
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0]
    if task in ("causal-lm", "text-to-text", "question-answering", "token-classification"):
        assert results["metrics"]["eval_loss"] < results["metrics_before"]["eval_before_loss"]
    trained = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trained and all(peft_trainable(n) for n in trained)
    assert (tmp_path / "out" / "adapter_config.json").is_file()


def quick(output_dir, *args, steps):
    from finetune_helpers import quick_args

    return quick_args(output_dir, *args, steps=steps)


# --------------------------------------------------------------------------------------------------------------------
# Prefix tuning's cache path on the bidirectional encoder
# --------------------------------------------------------------------------------------------------------------------


def prefix_cache(config, keys: torch.Tensor, values: torch.Tensor) -> DynamicCache:
    """A cache holding `keys`/`values` (layers, batch, kv heads, virtual tokens, head dim), as PEFT builds it."""
    cache = DynamicCache()
    for layer in range(config.num_hidden_layers):
        cache.update(keys[layer].clone(), values[layer].clone(), layer)
    return cache


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_encoder_reads_a_given_prefix_under_its_mask(attn_implementation):
    """The encoder attends to given past keys/values where the (past + length) attention mask says so, and nowhere
    else: a masked virtual token or a padding token can change nothing; an unmasked virtual token does."""
    torch.manual_seed(0)
    config = get_config("encoder-tiny", vocab_size=101, attn_implementation=attn_implementation)
    model = AutoModelForSequenceClassification.from_config(config).model.eval()
    batch, virtual, length = 2, 3, 5
    shape = (config.num_hidden_layers, batch, config.num_key_value_heads, virtual, config.head_dim)
    keys, values = torch.randn(shape), torch.randn(shape)
    input_ids = torch.randint(1, 101, (batch, length))
    mask = torch.ones(batch, virtual + length, dtype=torch.long)
    mask[:, 1] = 0  # virtual token 1 switched off
    mask[1, -2:] = 0  # row 1: two padding tokens

    def run(keys, values, input_ids):
        with torch.no_grad():
            cache = prefix_cache(config, keys, values)
            return model(input_ids=input_ids, attention_mask=mask, past_key_values=cache).last_hidden_state

    reference = run(keys, values, input_ids)
    assert reference.shape == (batch, length, config.hidden_size)
    masked_keys, masked_values = keys.clone(), values.clone()
    masked_keys[:, :, :, 1] += torch.randn_like(masked_keys[:, :, :, 1])
    masked_values[:, :, :, 1] += torch.randn_like(masked_values[:, :, :, 1])
    torch.testing.assert_close(run(masked_keys, masked_values, input_ids), reference)
    padded = input_ids.clone()
    padded[1, -2:] = torch.randint(1, 101, (2,))
    torch.testing.assert_close(run(keys, values, padded)[1, :-2], reference[1, :-2])
    live_values = values.clone()
    live_values[:, :, :, 0] += torch.randn_like(live_values[:, :, :, 0])
    assert not torch.allclose(run(keys, live_values, input_ids), reference, atol=1e-4)


def test_encoder_prefix_matches_eager_and_sdpa():
    torch.manual_seed(0)
    outputs = []
    for attn_implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        config = get_config("encoder-tiny", vocab_size=101, attn_implementation=attn_implementation)
        model = AutoModelForSequenceClassification.from_config(config).model.eval()
        generator = torch.Generator().manual_seed(1)
        shape = (config.num_hidden_layers, 2, config.num_key_value_heads, 4, config.head_dim)
        keys, values = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        input_ids = torch.randint(1, 101, (2, 6), generator=generator)
        mask = torch.ones(2, 10, dtype=torch.long)
        mask[0, -3:] = 0
        with torch.no_grad():
            cache = prefix_cache(config, keys, values)
            outputs.append(model(input_ids=input_ids, attention_mask=mask, past_key_values=cache).last_hidden_state)
    torch.testing.assert_close(outputs[0][0, :3], outputs[1][0, :3], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outputs[0][1], outputs[1][1], atol=1e-5, rtol=1e-4)
