"""Checkpoints: save -> load round trips for every model class, the Hub code that travels with them, tied weights.

Every class of every model type (the `AUTO_MAP` table) must come back bit-identical through its Auto class, both with
fourfold installed and, through `trust_remote_code=True`, in a fresh interpreter where fourfold cannot be imported.
"""

import ast
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from conftest import tiny_config
from remote_code import run_without_fourfold

from fourfold import modeling
from fourfold.modeling import AUTO_MAP

MODELING_DIR = Path(modeling.__file__).parent
HUB_FILES = sorted(path.name for path in MODELING_DIR.glob("*.py") if path.name != "__init__.py")
ARCHITECTURE_OF = {
    "fourfold-encoder": "encoder",
    "fourfold-decoder": "decoder",
    "fourfold-prefix-lm": "prefix-lm",
    "fourfold-seq2seq": "seq2seq",
}
CASES = [
    (model_type, auto_name, target.split(".")[-1])
    for model_type, auto_map in AUTO_MAP.items()
    for auto_name, target in auto_map.items()
    if auto_name != "AutoConfig"
]
GENERATIVE_AUTO = ("AutoModelForCausalLM", "AutoModelForSeq2SeqLM")


def build(model_type: str, class_name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    config = tiny_config(ARCHITECTURE_OF[model_type], num_labels=3, **overrides)
    return getattr(modeling, class_name)(config).eval()


def example_inputs(model_type: str, class_name: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 101, (2, 7), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, -2:] = 0  # one padded row exercises the padding mask too
    if class_name.endswith("ForMultipleChoice"):
        choices = torch.randint(3, 101, (2, 3, 7), generator=generator)  # (B, C, T)
        return {"input_ids": choices, "attention_mask": attention_mask.unsqueeze(1).expand(2, 3, 7)}
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if class_name in ("FourfoldSeq2SeqModel", "FourfoldSeq2SeqForConditionalGeneration"):
        inputs["decoder_input_ids"] = torch.randint(3, 101, (2, 5), generator=generator)
    return inputs


def realign(model: torch.nn.Module) -> torch.nn.Module:
    """Copy every tensor into freshly allocated memory. Loaded weights are memory-mapped from safetensors at 4-byte
    alignment, and CPU matmul kernels may sum in a different order for unaligned operands (last-bit differences);
    bit-identity is checked on the weights themselves and, after this, on the outputs."""
    for tensor in [*model.parameters(), *model.buffers()]:
        tensor.data = tensor.data.clone()
    return model


def output_tensors(output) -> list[torch.Tensor]:
    return [value for value in output.to_tuple() if isinstance(value, torch.Tensor)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[tuple[str, str], tuple[Path, dict, list[torch.Tensor], dict]]:
    """Every class saved once: (model_type, class_name) -> (folder, inputs, expected outputs, state dict)."""
    root = tmp_path_factory.mktemp("checkpoints")
    saved, state = {}, {}
    for model_type, _, class_name in CASES:
        model = build(model_type, class_name)
        state[model_type, class_name] = model.state_dict()
        inputs = example_inputs(model_type, class_name)
        with torch.no_grad():
            expected = output_tensors(model(**inputs))
        folder = root / class_name.lower()
        model.save_pretrained(folder)
        saved[model_type, class_name] = (folder, inputs, expected, state[model_type, class_name])
    return saved


@pytest.mark.parametrize(("model_type", "auto_name", "class_name"), CASES, ids=[case[2] for case in CASES])
def test_round_trip_through_auto_class(checkpoints, model_type, auto_name, class_name):
    folder, inputs, expected, state_dict = checkpoints[model_type, class_name]
    loaded = getattr(transformers, auto_name).from_pretrained(folder).eval()
    assert type(loaded).__name__ == class_name
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == state_dict.keys()
    for name, tensor in state_dict.items():
        assert torch.equal(loaded_state[name], tensor), name
    with torch.no_grad():
        actual = output_tensors(realign(loaded)(**inputs))
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert torch.equal(got, want)
    if hasattr(loaded.config, "num_labels") and "Classification" in class_name:
        assert loaded.config.num_labels == 3


@pytest.mark.parametrize(("model_type", "auto_name", "class_name"), CASES, ids=[case[2] for case in CASES])
def test_saved_folder_carries_auto_map_and_hub_code(checkpoints, model_type, auto_name, class_name):
    folder = checkpoints[model_type, class_name][0]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == model_type
    assert config["auto_map"] == AUTO_MAP[model_type]  # every Auto class of the type, whichever class saved it
    assert config["architectures"] == [class_name]
    hub_modules = [
        "compat.py",
        "configuration_fourfold.py",
        "heads.py",
        "layers.py",
        "loss.py",
        "masks.py",
        "modeling_fourfold.py",
    ]
    assert HUB_FILES == [*hub_modules, "pipelines.py", "question_answering.py"]
    for name in HUB_FILES:
        assert (folder / name).read_bytes() == (MODELING_DIR / name).read_bytes()
    assert not (folder / "__init__.py").exists()


LM_CLASS = {
    "fourfold-encoder": "FourfoldEncoderForMaskedLM",
    "fourfold-decoder": "FourfoldDecoderForCausalLM",
    "fourfold-prefix-lm": "FourfoldPrefixLMForCausalLM",
    "fourfold-seq2seq": "FourfoldSeq2SeqForConditionalGeneration",
}


@pytest.mark.parametrize(("model_type", "auto_name", "class_name"), CASES, ids=[case[2] for case in CASES])
def test_every_class_starts_from_the_pretrained_lm_checkpoint(checkpoints, model_type, auto_name, class_name):
    """Fine-tuning starts from a pretraining checkpoint: the base weights load unchanged, only the new task head
    (never a `model.*` weight) is initialised fresh."""
    folder, _, _, lm_state = checkpoints[model_type, LM_CLASS[model_type]]
    model, info = getattr(transformers, auto_name).from_pretrained(folder, output_loading_info=True)
    assert not any(key.startswith("model.") for key in info["missing_keys"]), info["missing_keys"]
    if auto_name == "AutoModel":
        assert not info["missing_keys"]
    compared = 0
    for name, tensor in model.state_dict().items():
        source = name if name in lm_state else f"model.{name}"
        if source in lm_state and name not in info["missing_keys"]:
            assert torch.equal(tensor, lm_state[source]), name
            compared += 1
    assert compared >= len([name for name in model.state_dict() if "layers." in name])


REMOTE_SCRIPT = textwrap.dedent(
    """
    import torch, transformers

    cases = torch.load(sys.argv[1], weights_only=False)
    torch.set_num_threads(cases[0]["threads"])  # bitwise equality needs the same reduction splits as the parent
    for case in cases:
        model = getattr(transformers, case["auto_name"]).from_pretrained(case["folder"], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(model).__name__ == case["class_name"], type(model).__name__
        for tensor in [*model.parameters(), *model.buffers()]:  # see realign() in test_save_load.py
            tensor.data = tensor.data.clone()
        with torch.no_grad():
            outputs = [v for v in model(**case["inputs"]).to_tuple() if isinstance(v, torch.Tensor)]
        assert len(outputs) == len(case["expected"]), case["class_name"]
        for got, want in zip(outputs, case["expected"]):
            assert torch.equal(got, want), case["class_name"]
        if "generated" in case:
            generated = model.generate(**case["generate_inputs"], max_new_tokens=4, do_sample=False)
            assert torch.equal(generated, case["generated"]), (case["class_name"], generated, case["generated"])
    print("checked", len(cases))
    """
)


def test_remote_code_loads_without_fourfold(checkpoints, tmp_path):
    cases = []
    for model_type, auto_name, class_name in CASES:
        folder, inputs, expected, _ = checkpoints[model_type, class_name]
        case = dict(folder=str(folder), auto_name=auto_name, class_name=class_name, inputs=inputs, expected=expected)
        case["threads"] = torch.get_num_threads()
        if auto_name in GENERATIVE_AUTO:
            model = build(model_type, class_name)
            generate_inputs = {"input_ids": inputs["input_ids"][:1, :4]}
            case["generate_inputs"] = generate_inputs
            case["generated"] = model.generate(**generate_inputs, max_new_tokens=4, do_sample=False)
            assert case["generated"].shape[1] > 1
        cases.append(case)
    torch.save(cases, tmp_path / "cases.pt")
    stdout = run_without_fourfold(REMOTE_SCRIPT, tmp_path / "cases.pt", tmp_path)
    assert f"checked {len(CASES)}" in stdout


RESAVE_SCRIPT = """
import os, sys
import transformers

folder, resaved = sys.argv[1], sys.argv[1] + "-resaved"
# The base model class alone: transformers copies only modeling_fourfold.py and what it imports.
model = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)
model.save_pretrained(resaved)
print("files:", " ".join(sorted(n for n in os.listdir(resaved) if n.endswith(".py"))))
for name in ("AutoModelForCausalLM", "AutoModelForSequenceClassification"):
    getattr(transformers, name).from_pretrained(resaved, trust_remote_code=True)
print("reloaded")
"""


def test_hub_module_files_are_the_whole_folder():
    from fourfold.modeling.modeling_fourfold import hub_module_files

    assert [Path(path).name for path in hub_module_files()] == HUB_FILES


def test_a_remote_code_copy_saved_again_carries_every_module(tmp_path):
    """Loaded without fourfold through one class and saved again (as sentence-transformers or TRL do), a checkpoint
    still has every module its auto_map names, so the re-saved folder loads through every Auto class."""
    build("fourfold-decoder", "FourfoldDecoderForCausalLM").save_pretrained(tmp_path / "decoder")
    stdout = run_without_fourfold(RESAVE_SCRIPT, tmp_path / "decoder", tmp_path)
    assert f"files: {' '.join(HUB_FILES)}" in stdout and "reloaded" in stdout


def test_hub_code_imports_only_torch_transformers_stdlib_and_siblings():
    siblings = {path.stem for path in MODELING_DIR.glob("*.py")}
    allowed = {"torch", "transformers", "__future__"} | set(sys.stdlib_module_names)
    for path in MODELING_DIR.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed, f"{path.name}: import {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module.split(".")[0] in allowed, f"{path.name}: from {node.module} import ..."
                else:
                    assert node.level == 1, f"{path.name}: relative import beyond the folder (level {node.level})"
                    assert node.module in siblings, f"{path.name}: from .{node.module} (not a sibling module)"


# --------------------------------------------------------------------------------------------------------------------
# Tied weights and resizing
# --------------------------------------------------------------------------------------------------------------------


def test_decoder_tied_head_shares_the_embedding_after_load(tmp_path):
    model = build("fourfold-decoder", "FourfoldDecoderForCausalLM", tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_decoder_untied_head_is_separate_and_survives_load(tmp_path):
    model = build("fourfold-decoder", "FourfoldDecoderForCausalLM", tie_word_embeddings=False)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is not loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_encoder_mlm_decoder_shares_the_embedding_after_load(tmp_path):
    model = build("fourfold-encoder", "FourfoldEncoderForMaskedLM")
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert loaded.lm_head.decoder.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.decoder.bias, model.lm_head.decoder.bias)


def test_seq2seq_embeddings_all_share_one_matrix_after_load(tmp_path):
    model = build("fourfold-seq2seq", "FourfoldSeq2SeqForConditionalGeneration")
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    shared = loaded.model.shared.weight
    assert loaded.lm_head.weight is shared
    assert loaded.model.encoder.embed_tokens.weight is shared
    assert loaded.model.decoder.embed_tokens.weight is shared
    assert torch.equal(shared, model.model.shared.weight)


@pytest.mark.parametrize(
    ("model_type", "class_name"),
    [
        ("fourfold-encoder", "FourfoldEncoderForMaskedLM"),
        ("fourfold-decoder", "FourfoldDecoderForCausalLM"),
        ("fourfold-prefix-lm", "FourfoldPrefixLMForCausalLM"),
        ("fourfold-seq2seq", "FourfoldSeq2SeqForConditionalGeneration"),
    ],
)
def test_resize_token_embeddings(model_type, class_name):
    model = build(model_type, class_name)
    old_rows = model.get_input_embeddings().weight[:101].clone()
    model.resize_token_embeddings(120)
    assert model.config.vocab_size == 120
    embedding = model.get_input_embeddings()
    assert embedding.weight.shape[0] == 120
    assert torch.equal(embedding.weight[:101], old_rows)
    output = model.get_output_embeddings()
    assert output.weight is embedding.weight  # the tied head follows the resized embedding
    if model_type == "fourfold-seq2seq":
        assert model.model.encoder.embed_tokens.weight is embedding.weight
        assert model.model.decoder.embed_tokens.weight is embedding.weight
    inputs = {"input_ids": torch.tensor([[5, 119, 110, 7]])}
    if model_type == "fourfold-seq2seq":
        inputs["decoder_input_ids"] = torch.tensor([[0, 115]])
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == 120
    assert torch.isfinite(logits).all()


def test_resize_token_embeddings_of_an_untied_decoder():
    model = build("fourfold-decoder", "FourfoldDecoderForCausalLM", tie_word_embeddings=False)
    old_head = model.lm_head.weight.detach().clone()
    model.resize_token_embeddings(120)
    assert model.model.embed_tokens.weight.shape == model.lm_head.weight.shape == (120, 64)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert torch.equal(model.lm_head.weight[:101], old_head)
    assert model(input_ids=torch.tensor([[5, 119]])).logits.shape == (1, 2, 120)
