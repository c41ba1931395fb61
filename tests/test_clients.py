"""fourfold checkpoints in the tools users run them with: sentence-transformers, ONNX Runtime, TRL's SFT on chat rows.

Each test checks the tool's answer against fourfold's own model: sentence embeddings against a hand-computed masked
mean of the encoder's last hidden state (here, and where fourfold is not installed, through push's upload set, and
after sentence-transformers or `save_pretrained` saved the remote-code model again); ONNX graphs of the encoder
forward and of the decoder forward with its key/value cache against PyTorch; the chat template against the rows it
renders. Each skips, naming the package, where the tool is not installed.
"""

import json
from pathlib import Path

import pytest
import torch
from hub_helpers import TEXTS, save_checkpoint
from remote_code import run_without_fourfold
from transformers import AutoTokenizer
from transformers.cache_utils import DynamicCache

from fourfold.configuration import get_config
from fourfold.modeling import FourfoldDecoderForCausalLM, FourfoldEncoderForMaskedLM, FourfoldEncoderModel
from fourfold.modeling.compat import output_cache
from fourfold.modeling.modeling_fourfold import hub_module_files
from fourfold.training.chat_template import DEFAULT_CHAT_TEMPLATE, resolve_chat_template
from fourfold.training.errors import UsageError
from fourfold.training.pretrain import TokenizerArguments
from fourfold.training.push import export_for_hub, files_to_upload
from fourfold.training.sentence_transformers_files import write_sentence_transformers_files
from fourfold.training.tokenizer import load_or_train_tokenizer, model_special_ids

SENTENCES = ["the cat sat on the mat", "a dog", "the quick brown fox jumps over the lazy dog"]  # padding in a batch
POOLING_FILES = ["1_Pooling/config.json", "modules.json", "sentence_bert_config.json"]


def masked_mean_embeddings(folder: Path, sentences: list[str]) -> torch.Tensor:
    """The reference: fourfold's encoder on the padded batch, its last hidden state averaged over real tokens."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = FourfoldEncoderModel.from_pretrained(folder).eval()
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # (B, H)


@pytest.fixture
def encoder_folder(tmp_path) -> Path:
    folder = tmp_path / "encoder"
    save_checkpoint(folder, "encoder", FourfoldEncoderForMaskedLM)
    return folder


# --------------------------------------------------------------------------------------------------------------------
# sentence-transformers
# --------------------------------------------------------------------------------------------------------------------


def test_encoder_folder_gets_mean_pooling_files_and_encodes_as_the_masked_mean(encoder_folder):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    assert write_sentence_transformers_files(encoder_folder) == POOLING_FILES
    config = json.loads((encoder_folder / "config.json").read_text())
    pooling = json.loads((encoder_folder / "1_Pooling/config.json").read_text())
    assert pooling["word_embedding_dimension"] == config["hidden_size"]
    assert [mode for mode, on in pooling.items() if mode.startswith("pooling_mode_") and on] == [
        "pooling_mode_mean_tokens"
    ]
    assert write_sentence_transformers_files(encoder_folder) == []  # an existing set is kept

    model = sentence_transformers.SentenceTransformer(str(encoder_folder), device="cpu")
    assert model.encode(SENTENCES[:1]).shape[-1] == config["hidden_size"]
    embeddings = model.encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(embeddings, masked_mean_embeddings(encoder_folder, SENTENCES))


def test_only_the_encoder_gets_pooling_files(tmp_path):
    save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    assert write_sentence_transformers_files(tmp_path) == []
    assert not set(POOLING_FILES) & set(files_to_upload(tmp_path))


# In one interpreter without fourfold: each folder's code is copied into the module cache from that folder alone
# (under the folder's own name), so the re-saved folders load only if their saves wrote every module.
WITHOUT_FOURFOLD = """
import json, sys
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

paths = json.load(open(sys.argv[1]))
model = SentenceTransformer(paths["hub"], trust_remote_code=True, device="cpu")
torch.save(model.encode(paths["sentences"], convert_to_tensor=True), paths["embeddings"])
model.save(paths["resaved_st"])
AutoModel.from_pretrained(paths["hub"], trust_remote_code=True).save_pretrained(paths["resaved_plain"])

model = SentenceTransformer(paths["resaved_st"], trust_remote_code=True, device="cpu")
torch.save(model.encode(paths["sentences"], convert_to_tensor=True), paths["embeddings_resaved_st"])
plain = AutoModel.from_pretrained(paths["resaved_plain"], trust_remote_code=True).eval()
batch = AutoTokenizer.from_pretrained(paths["hub"])(paths["sentences"], padding=True, return_tensors="pt")
with torch.no_grad():
    hidden = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
torch.save(hidden, paths["hidden_resaved_plain"])
print(type(model[0].auto_model).__module__, type(plain).__module__)
"""


def test_pushed_encoder_is_a_sentence_transformer_without_fourfold_and_resaves_whole(encoder_folder, tmp_path):
    pytest.importorskip("sentence_transformers")
    hub = tmp_path / "hub"
    uploaded = export_for_hub(encoder_folder, hub)  # exactly what `fourfold push` uploads
    assert set(POOLING_FILES) <= set(uploaded)
    assert not (encoder_folder / "modules.json").exists()  # generated for the upload; the folder is left as it was
    paths = {name: str(tmp_path / name) for name in ("resaved_st", "resaved_plain")}
    paths |= {name: str(tmp_path / f"{name}.pt") for name in ("embeddings", "embeddings_resaved_st")}
    paths |= {"hub": str(hub), "sentences": SENTENCES, "hidden_resaved_plain": str(tmp_path / "hidden.pt")}
    (tmp_path / "paths.json").write_text(json.dumps(paths))

    stdout = run_without_fourfold(WITHOUT_FOURFOLD, tmp_path / "paths.json", tmp_path)
    # The re-saved models ran from their own folders' copies of the code.
    modules_run = [module.split(".") for module in stdout.split()[-2:]]  # transformers_modules.<folder>[.hash].x
    assert [(parts[0], parts[1]) for parts in modules_run] == [
        ("transformers_modules", "resaved_st"),
        ("transformers_modules", "resaved_plain"),
    ]
    modules = {Path(path).name for path in hub_module_files()}
    for folder in ("resaved_st", "resaved_plain"):
        assert modules <= {path.name for path in (tmp_path / folder).iterdir()}, folder
    assert json.loads((tmp_path / "resaved_st/modules.json").read_text())[1]["path"] == "1_Pooling"

    expected = masked_mean_embeddings(encoder_folder, SENTENCES)
    torch.testing.assert_close(torch.load(paths["embeddings"]), expected)
    torch.testing.assert_close(torch.load(paths["embeddings_resaved_st"]), expected)
    batch = AutoTokenizer.from_pretrained(encoder_folder)(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        encoder = FourfoldEncoderModel.from_pretrained(encoder_folder).eval()
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(torch.load(paths["hidden_resaved_plain"]), hidden)


# --------------------------------------------------------------------------------------------------------------------
# ONNX (torch.onnx.export with dynamo=True) in ONNX Runtime
# --------------------------------------------------------------------------------------------------------------------


class DecoderWithCache(torch.nn.Module):
    """A causal LM's forward with its key/value cache as flat tensors, the form ONNX graphs take: inputs
    `(input_ids, attention_mask, past_key_0, past_value_0, past_key_1, ...)`, outputs `(logits, present_key_0,
    present_value_0, ...)`; each past tensor is (batch, kv_heads, past_length, head_dim), the attention mask covers
    past and new tokens, and a present tensor is its past with the new tokens appended."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor) -> tuple:
        cache = DynamicCache()
        for layer, (key, value) in enumerate(zip(past[::2], past[1::2], strict=True)):
            cache.update(key, value, layer)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=True)
        return (outputs.logits, *flat_cache(output_cache(outputs)))


def flat_cache(cache) -> list[torch.Tensor]:
    return [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]


def export_to_onnx(module: torch.nn.Module, inputs: tuple, names: list[str], dynamic: tuple, path: Path):
    """`torch.onnx.export(dynamo=True)` with the named inputs' dynamic axes, run by an ONNX Runtime session."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    with torch.no_grad():
        program = torch.onnx.export(module, inputs, dynamo=True, dynamic_shapes=dynamic, input_names=names)
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda *tensors: session.run(None, {n: t.numpy() for n, t in zip(names, tensors, strict=True)})


def test_encoder_forward_exports_to_onnx_with_dynamic_batch_and_length(tmp_path):
    torch.manual_seed(0)
    model = FourfoldEncoderForMaskedLM(get_config("encoder-tiny", vocab_size=101)).eval()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length")
    example = torch.randint(3, 101, (2, 6))
    run = export_to_onnx(
        model,
        (example, torch.ones_like(example)),
        ["input_ids", "attention_mask"],
        ({0: batch, 1: length}, {0: batch, 1: length}),
        tmp_path / "encoder.onnx",
    )
    ids = torch.randint(3, 101, (3, 9))  # another batch size and length than the export's
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    (logits,) = run(ids, mask)
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=0, atol=1e-4)


def test_decoder_forward_with_cache_exports_to_onnx(tmp_path):
    torch.manual_seed(0)
    model = FourfoldDecoderForCausalLM(get_config("decoder-tiny", vocab_size=101)).eval()
    wrapper = DecoderWithCache(model).eval()

    def past_of(ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return flat_cache(output_cache(model(input_ids=ids, attention_mask=mask, use_cache=True)))

    example = torch.randint(3, 101, (2, 8))
    past = past_of(example[:, :5], torch.ones(2, 5, dtype=torch.long))
    batch, new, total, cached = (torch.export.Dim(n) for n in ("batch", "new", "total", "cached"))
    names = ["input_ids", "attention_mask", *[f"past_{i}" for i in range(len(past))]]
    dynamic = ({0: batch, 1: new}, {0: batch, 1: total}, tuple({0: batch, 2: cached} for _ in past))
    run = export_to_onnx(
        wrapper, (example[:, 5:], torch.ones_like(example), *past), names, dynamic, tmp_path / "decoder.onnx"
    )

    ids = torch.randint(3, 101, (3, 9))  # another batch, past length (6) and new length (3) than the export's
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding, as batched generation has
    past = past_of(ids[:, :6], mask[:, :6])
    with torch.no_grad():
        expected = wrapper(ids[:, 6:], mask, *past)
        uncached = model(input_ids=ids, attention_mask=mask).logits[:, 6:]
    got = [torch.from_numpy(array) for array in run(ids[:, 6:], mask, *past)]
    assert len(got) == len(expected) == 1 + len(past)
    for tensor, reference in zip(got, expected, strict=True):
        torch.testing.assert_close(tensor, reference, rtol=0, atol=1e-4)
    assert got[1].shape[2] == 9  # the present cache holds past and new tokens
    torch.testing.assert_close(got[0][mask[:, 6:].bool()], uncached[mask[:, 6:].bool()], rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------------
# Chat template, and TRL's SFT on chat rows
# --------------------------------------------------------------------------------------------------------------------

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "where did the cat sit ?"},
    {"role": "assistant", "content": "on the mat ."},
]


def test_causal_lm_tokenizers_get_the_default_chat_template_and_it_marks_the_answer(tmp_path):
    assert load_or_train_tokenizer(None, "encoder", TEXTS, vocab_size=300).chat_template is None
    tokenizer = load_or_train_tokenizer(None, "decoder", TEXTS, vocab_size=300)
    tokenizer.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)  # saved with it (chat_template.jinja)
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    text = "<s><|system|>\nBe brief.\n<|user|>\nwhere did the cat sit ?\n<|assistant|>\non the mat .</s>\n"
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == text
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt) and prompt.endswith("<|assistant|>\n")
    encoded = tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = encoded["input_ids"], encoded["assistant_masks"]
    assert ids.count(tokenizer.bos_token_id) == 1  # the template's <s> only: no second one from the tokenizer
    answer = [token for token, marked in zip(ids, mask, strict=True) if marked]
    assert tokenizer.decode(answer) == "on the mat .</s>"  # the answer and its eos, nothing of the prompt


def test_chat_template_option_takes_a_file_or_a_template_and_refuses_anything_else(tmp_path):
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (tmp_path / "chat.jinja").write_text(template)
    assert resolve_chat_template(str(tmp_path / "chat.jinja")) == template == resolve_chat_template(template)
    tokenizer = load_or_train_tokenizer(None, "decoder", TEXTS, vocab_size=300, chat_template=template)
    assert tokenizer.apply_chat_template(CHAT, tokenize=False) == "Be brief.where did the cat sit ?on the mat ."
    with pytest.raises(UsageError, match="neither a file nor a Jinja template"):
        TokenizerArguments(chat_template=str(tmp_path / "missing.jinja"))
    with pytest.raises(UsageError, match="does not parse as Jinja"):
        TokenizerArguments(chat_template="{% for m in messages %}")


def test_trl_sft_trains_on_chat_rows_with_the_answer_as_the_loss(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    tokenizer = load_or_train_tokenizer(None, "decoder", TEXTS, vocab_size=300)
    torch.manual_seed(0)
    model = FourfoldDecoderForCausalLM(get_config("decoder-tiny", **model_special_ids(tokenizer, "decoder")))
    answers = ["on the mat .", "on the log .", "the road ."]
    rows = [{"messages": [*CHAT[:2], {"role": "assistant", "content": answer}]} for answer in answers]
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=3,
        report_to="none",
        save_strategy="no",
        assistant_only_loss=True,
        bf16=False,  # SFTConfig defaults to bf16, which this CPU run cannot do
    )
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    learned = sorted(tokenizer.decode(row[row != -100]) for row in batch["labels"])
    assert learned == sorted(f"{answer}</s>" for answer in answers)  # each answer and its eos, no prompt token
    assert torch.isfinite(torch.tensor(trainer.train().training_loss))
