"""Model cards: every field comes from a file in the output folder, the metadata is valid, and ours wins over
Trainer's own card on `push_to_hub`.

A real (tiny, 4-step) Trainer run writes the folder, so the card is checked against the files Trainer itself writes.
"""

import json
import shutil
from pathlib import Path

import pytest
import transformers
import transformers.trainer
import yaml
from hub_helpers import save_checkpoint, train_tiny_decoder
from huggingface_hub import ModelCard

import fourfold
from fourfold.hub_cards import render_model_card, write_model_card
from fourfold.hub_cards.cards import MARKER, REVISION_PLACEHOLDER, count_parameters, read_metrics
from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldEncoderForMaskedLM,
    FourfoldEncoderForMultipleChoice,
    FourfoldEncoderForQuestionAnswering,
    FourfoldEncoderForTokenClassification,
    FourfoldEncoderModel,
    FourfoldPrefixLMForCausalLM,
    FourfoldPrefixLMForSequenceClassification,
    FourfoldSeq2SeqEncoderModel,
    FourfoldSeq2SeqForConditionalGeneration,
)
from fourfold.modeling.compat import TRANSFORMERS_REQUIREMENT
from fourfold.training.trainer import FourfoldTrainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder, model, tokenizer, trainer) of a 4-step decoder run that saved everything pretraining saves."""
    folder = tmp_path_factory.mktemp("pretrain-decoder")
    return (folder, *train_tiny_decoder(folder))


def front_matter(path) -> dict:
    """The README's YAML header, parsed by PyYAML itself (not through huggingface_hub)."""
    text = path.read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_card_metadata_comes_from_the_training_files(trained):
    folder = trained[0]
    metadata = front_matter(folder / "README.md")
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "text-generation"
    assert metadata["license"] == "apache-2.0"
    assert metadata["tags"] == ["fourfold", "fourfold-decoder"]
    assert "base_model" not in metadata and "datasets" not in metadata  # trained from scratch on a local file

    results = metadata["model-index"][0]["results"]
    eval_loss = json.loads((folder / "all_results.json").read_text())["eval_loss"]
    assert results[0]["task"]["type"] == "text-generation"
    assert results[0]["dataset"] == {"name": "tiny.jsonl", "type": "custom", "split": "validation"}
    assert results[0]["metrics"] == [{"type": "loss", "value": round(eval_loss, 4)}]
    # huggingface_hub reads the same header back.
    assert ModelCard.load(folder / "README.md").data.eval_results[0].metric_value == round(eval_loss, 4)


def test_card_body_states_size_tokenizer_recipe_and_results(trained):
    folder, model, tokenizer, trainer = trained
    body = (folder / "README.md").read_text().split("---\n", 2)[2]
    assert MARKER in body
    assert "**causal decoder** (`fourfold-decoder`, `FourfoldDecoderForCausalLM`)" in body
    assert "causal: every token attends to itself and earlier tokens" in body
    assert f"({model.num_parameters():,})" in body
    assert f"Byte-level BPE, {len(tokenizer):,} tokens" in body
    assert "`<pad>`" in body and "`<mask>`" in body
    assert "Data: `tiny.jsonl` (local file)" in body
    for row in ("| learning rate | 0.001 |", "| schedule | cosine |", "| seed | 0 |", "| objective | clm |"):
        assert row in body
    assert f"| steps trained | {trainer.state.global_step} |" in body
    assert "masking probability" not in body and "| epochs |" not in body  # other objectives; max_steps wins
    last_loss = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-1]
    assert f"last logged training loss: {last_loss:.4f}" in body
    assert "![Training loss](loss_curve.png)" in body and (folder / "loss_curve.png").is_file()
    assert "| validation | loss |" in body
    assert "trust_remote_code=True" in body and f'revision = "<owner>/<name>", "{REVISION_PLACEHOLDER}"' in body
    assert "AutoModelForCausalLM.from_pretrained(repo, revision=revision, trust_remote_code=True)" in body
    # What the shipped code is and was tested with, read from config.json.
    assert (
        f"That code is fourfold {fourfold.__version__}'s, tested with transformers `{TRANSFORMERS_REQUIREMENT}`; "
        f"this checkpoint was saved with transformers {transformers.__version__}."
    ) in body


def test_card_overrides_fill_what_no_file_knows(trained, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(trained[0], folder)
    (folder / "loss_curve.png").unlink()
    card = write_model_card(
        folder,
        license="mit",
        language="en",
        tags=["tiny"],
        datasets=["someone/moby-dick"],
        repo_id="me/fourfold-decoder-tiny",
        revision="0123abc",
    )
    metadata = front_matter(card)
    assert (metadata["license"], metadata["language"], metadata["datasets"]) == ("mit", "en", ["someone/moby-dick"])
    assert metadata["tags"] == ["fourfold", "fourfold-decoder", "tiny"]
    assert metadata["model-index"][0]["name"] == "fourfold-decoder-tiny"
    assert metadata["model-index"][0]["results"][0]["dataset"]["type"] == "someone/moby-dick"
    body = card.read_text()
    assert 'repo, revision = "me/fourfold-decoder-tiny", "0123abc"' in body
    assert REVISION_PLACEHOLDER not in body
    assert "loss_curve.png" not in body
    with pytest.raises(TypeError, match="Unknown card overrides"):
        render_model_card(folder, licence="mit")


@pytest.mark.parametrize(
    ("architecture", "head", "pipeline_tag", "auto_class", "task"),
    [
        ("encoder", FourfoldEncoderForMaskedLM, "fill-mask", "AutoModelForMaskedLM", "fill-mask"),
        ("encoder", FourfoldEncoderModel, "feature-extraction", "AutoModel", "feature-extraction"),
        ("encoder", FourfoldEncoderForTokenClassification, "token-classification", None, "token-classification"),
        (
            "encoder",
            FourfoldEncoderForQuestionAnswering,
            "question-answering",
            None,
            "fourfold-question-answering",
        ),
        ("encoder", FourfoldEncoderForMultipleChoice, "multiple-choice", None, "multiple-choice"),
        ("decoder", FourfoldDecoderForCausalLM, "text-generation", "AutoModelForCausalLM", "text-generation"),
        ("prefix-lm", FourfoldPrefixLMForCausalLM, "text-generation", None, "text-generation"),
        ("prefix-lm", FourfoldPrefixLMForSequenceClassification, "text-classification", None, "text-classification"),
        (
            "seq2seq",
            FourfoldSeq2SeqForConditionalGeneration,
            "text2text-generation",
            "AutoModelForSeq2SeqLM",
            "fourfold-text2text",
        ),
        ("seq2seq", FourfoldSeq2SeqEncoderModel, "feature-extraction", "AutoModelForTextEncoding", None),
    ],
)
def test_pipeline_tag_and_loading_example_follow_the_head(tmp_path, architecture, head, pipeline_tag, auto_class, task):
    model, _ = save_checkpoint(tmp_path, architecture, head)
    card = write_model_card(tmp_path)
    metadata = front_matter(card)
    assert metadata["pipeline_tag"] == pipeline_tag
    assert metadata["tags"] == ["fourfold", model.config.model_type]
    assert "model-index" not in metadata  # nothing evaluated
    body = card.read_text()
    if auto_class:
        assert f"model = {auto_class}.from_pretrained(repo, revision=revision, trust_remote_code=True)" in body
    if task:
        assert f'pipe = pipeline("{task}", model=' in body
    assert f"({model.num_parameters():,})" in body
    assert "No training record" in body and "No evaluation results" in body


def test_parameter_count_counts_tied_weights_once(tmp_path, architecture):
    heads = {
        "encoder": FourfoldEncoderForMaskedLM,
        "decoder": FourfoldDecoderForCausalLM,
        "prefix-lm": FourfoldPrefixLMForCausalLM,
        "seq2seq": FourfoldSeq2SeqForConditionalGeneration,
    }
    model, _ = save_checkpoint(tmp_path, architecture, heads[architecture])
    assert count_parameters(tmp_path) == model.num_parameters()


def test_fine_tune_links_a_hub_base_model_and_names_a_local_one(tmp_path):
    save_checkpoint(tmp_path, "encoder", FourfoldEncoderForTokenClassification)
    run = {"ModelArguments": {"model_name_or_path": "me/fourfold-encoder-base"}}
    (tmp_path / "run_arguments.json").write_text(json.dumps(run))
    card = write_model_card(tmp_path)
    assert front_matter(card)["base_model"] == "me/fourfold-encoder-base"
    assert "Fine-tuned from [me/fourfold-encoder-base](https://huggingface.co/me/fourfold-encoder-base)" in (
        card.read_text()
    )

    run["ModelArguments"]["model_name_or_path"] = str(tmp_path)  # a local folder is no Hub id
    (tmp_path / "run_arguments.json").write_text(json.dumps(run))
    card = write_model_card(tmp_path)
    assert "base_model" not in front_matter(card)
    assert f"Fine-tuned from the local checkpoint `{tmp_path}`" in card.read_text()


def test_converted_checkpoint_names_its_source(tmp_path):
    save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    conversion = {"base_model": "openai-community/gpt2", "source_class": "GPT2LMHeadModel"}
    (tmp_path / "conversion.json").write_text(json.dumps({**conversion, "verified_max_abs_diff": 3e-6}))
    card = write_model_card(tmp_path)
    assert front_matter(card)["base_model"] == "openai-community/gpt2"
    body = card.read_text()
    assert "Converted from [`openai-community/gpt2`](https://huggingface.co/openai-community/gpt2)" in body
    assert "matched the source's to 3e-06" in body
    assert "Not trained here" in body


def test_metrics_from_trainer_and_fine_tuning_results_files(tmp_path):
    (tmp_path / "all_results.json").write_text(
        json.dumps({"eval_accuracy": 0.5, "eval_runtime": 1.0, "train_loss": 0.7, "epoch": 3.0, "test_f1": 0.4})
    )
    # The shape of fourfold finetune's results.json: metrics in sections, run facts beside them.
    finetune_results = {
        "task": "sequence-classification",
        "num_train_rows": 96,
        "metrics": {"eval_accuracy": 0.75, "eval_loss": 0.6, "eval_samples_per_second": 99.0},
        "metrics_before": {"eval_before_accuracy": 0.25},
        "baseline": {"baseline_accuracy": 0.5},
        "parameters": {"trainable": 10, "total": 100},
        "peak_memory": {"rss_mb": 500.0},
        "train_loss": 0.3,
        "runtime_s": 2.0,
        "arguments": {"training": {"learning_rate": "0.003", "seed": "7", "bf16": "False"}},
    }
    (tmp_path / "results.json").write_text(json.dumps(finetune_results))
    rows = {(row["split"], row["metric"]): row["value"] for row in read_metrics(tmp_path)}
    # results.json wins over all_results.json; bookkeeping, run facts and training numbers are not metrics.
    assert rows == {
        ("validation", "accuracy"): 0.75,
        ("validation", "loss"): 0.6,
        ("test", "f1"): 0.4,
        ("validation, before training", "accuracy"): 0.25,
        ("validation, majority-class baseline", "accuracy"): 0.5,
    }
    save_checkpoint(tmp_path, "encoder", FourfoldEncoderForTokenClassification)
    card = write_model_card(tmp_path)
    results = front_matter(card)["model-index"][0]["results"]
    assert {(r["dataset"]["split"], m["type"]) for r in results for m in r["metrics"]} == {
        ("validation", "accuracy"),
        ("validation", "loss"),
        ("test", "f1"),
    }
    body = card.read_text()
    assert "| learning rate | 0.003 |" in body and "| seed | 7 |" in body and "bf16" not in body


def test_adapter_card(tmp_path):
    peft = pytest.importorskip("peft")
    base, _ = save_checkpoint(tmp_path / "base", "decoder", FourfoldDecoderForCausalLM)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="SEQ_CLS")
    adapter = peft.get_peft_model(base, lora)
    adapter.peft_config["default"].base_model_name_or_path = str(tmp_path / "base")
    adapter.save_pretrained(tmp_path / "adapter")  # PEFT writes its own README.md ...
    card = write_model_card(tmp_path / "adapter", base_model="me/fourfold-decoder-tiny")  # ... which ours replaces
    metadata = front_matter(card)
    assert metadata["library_name"] == "peft"
    assert metadata["base_model"] == "me/fourfold-decoder-tiny"
    assert metadata["pipeline_tag"] == "text-classification"  # the adapter's task, not the base head's
    assert metadata["tags"] == ["fourfold", "fourfold-decoder", "peft", "lora"]
    body = card.read_text()
    trainable = sum(p.numel() for name, p in adapter.named_parameters() if "lora_" in name)
    assert f"adapter parameters | {trainable / 1e3:.1f}K ({trainable:,})" in body
    assert "| target_modules | q_proj, v_proj |" in body
    assert "| r | 4 |" in body
    assert 'AutoModelForSequenceClassification.from_pretrained("me/fourfold-decoder-tiny"' in body
    assert "PeftModel.from_pretrained(base," in body


def test_trainer_push_to_hub_uploads_our_card(trained, monkeypatch):
    """Trainer.push_to_hub writes its own card right before uploading; FourfoldTrainer's card must be the one
    in the folder at upload time. The Hub calls are replaced by a recorder."""
    folder, _, _, trainer = trained
    uploaded = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("RepoUrl", (), {"repo_id": f"me/{repo_id}"})()

        def upload_folder(self, folder_path, **kwargs):
            uploaded["readme"] = ((Path(folder_path) / "README.md").read_text(), kwargs["repo_id"])

    monkeypatch.setattr(transformers.trainer, "hf_api", FakeApi)
    assert isinstance(trainer, FourfoldTrainer)
    trainer.push_to_hub(tags=["tiny"])
    readme, repo_id = uploaded["readme"]
    assert repo_id == f"me/{folder.name}"
    assert MARKER in readme and "generated_from_trainer" not in readme
    assert front_matter(folder / "README.md")["tags"] == ["fourfold", "fourfold-decoder", "tiny"]

    # The plain Trainer would have uploaded its own card.
    transformers.Trainer.create_model_card(trainer)
    assert MARKER not in (folder / "README.md").read_text()
    write_model_card(folder)  # restore for the other tests of this module


def test_card_of_a_bare_model_folder(tmp_path):
    """A bare folder with only a model still gets a valid card."""
    save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink()
    body = write_model_card(tmp_path).read_text()
    assert "No tokenizer was saved" in body
    assert front_matter(tmp_path / "README.md")["pipeline_tag"] == "text-generation"
