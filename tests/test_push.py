"""`fourfold push`: everything up to the upload itself, offline.

The exact file set, the errors (each before any change), the commit that would be made (through a recording
`HfApi`), and the acceptance test: the file set alone, in a fresh folder, loads and runs its pipelines with
`trust_remote_code=True` in an interpreter where fourfold cannot be imported.
"""

import http.server
import json
import socket
import textwrap
import threading

import pytest
from hub_helpers import save_checkpoint, train_tiny_decoder
from huggingface_hub import constants
from remote_code import run_without_fourfold
from transformers import pipeline

from fourfold.hub_cards.cards import MARKER
from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldEncoderForQuestionAnswering,
    FourfoldSeq2SeqForConditionalGeneration,
)
from fourfold.training.cli import main as cli_main
from fourfold.training.push import PushError, check_hub_access, export_for_hub, files_to_upload, hub_files, push

CODE = [
    "compat.py",
    "configuration_fourfold.py",
    "heads.py",
    "layers.py",
    "loss.py",
    "masks.py",
    "modeling_fourfold.py",
    "pipelines.py",
    "question_answering.py",
]
TOKENIZER = ["tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step pretraining output folder, plus the clutter a real run leaves that must not be uploaded."""
    folder = tmp_path_factory.mktemp("pretrain-decoder")
    model, tokenizer, _ = train_tiny_decoder(folder)
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"state")
    (folder / "runs").mkdir()
    (folder / "samples.txt").write_text("samples\n")
    (folder / "notes.py").write_text("print('a stray script')\n")
    assert (folder / "training_args.bin").is_file()  # Trainer's pickle: never uploaded
    return folder, model, tokenizer


@pytest.fixture()
def online(monkeypatch):
    """Lets the access check get past offline mode (the test suite runs with HF_HUB_OFFLINE=1)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


# --------------------------------------------------------------------------------------------------------------------
# The file set
# --------------------------------------------------------------------------------------------------------------------


def test_files_to_upload_is_exactly_model_code_tokenizer_card_and_records(trained):
    folder = trained[0]
    records = ["all_results.json", "loss_curve.png", "run_arguments.json", "trainer_state.json"]
    expected = ["README.md", "config.json", "generation_config.json", "model.safetensors", *CODE, *TOKENIZER, *records]
    # Every module of modeling/ goes up, whichever class the checkpoint names: modeling_fourfold imports them all
    # (hub_module_files), so a re-save of the Hub copy is complete too.
    assert files_to_upload(folder) == sorted(expected)


def test_seq2seq_and_qa_checkpoints_ship_their_pipeline(tmp_path):
    for architecture, head, task in [
        ("seq2seq", FourfoldSeq2SeqForConditionalGeneration, "fourfold-text2text"),
        ("encoder", FourfoldEncoderForQuestionAnswering, "fourfold-question-answering"),
    ]:
        folder = tmp_path / architecture
        save_checkpoint(folder, architecture, head)
        assert "pipelines.py" in files_to_upload(folder)
        uploaded_config = json.loads(hub_files(folder)["config.json"])
        assert list(uploaded_config["custom_pipelines"]) == [task]
        assert "custom_pipelines" not in json.loads((folder / "config.json").read_text())  # local folder unchanged


def test_sharded_weights_upload_the_index_and_every_shard(tmp_path):
    model, _ = save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    (tmp_path / "model.safetensors").unlink()
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    shards = sorted(path.name for path in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1
    assert {"model.safetensors.index.json", *shards} <= set(files_to_upload(tmp_path))


def test_adapter_folder_uploads_the_adapter_files(tmp_path):
    peft = pytest.importorskip("peft")
    base, tokenizer = save_checkpoint(tmp_path / "base", "decoder", FourfoldDecoderForCausalLM)
    lora = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft.get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    assert files_to_upload(tmp_path / "adapter") == sorted(
        ["README.md", "adapter_config.json", "adapter_model.safetensors", *TOKENIZER]
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda folder: (folder / "masks.py").unlink(), "lacks masks.py"),
        (lambda folder: (folder / "config.json").unlink(), "neither config.json"),
        (
            lambda folder: (folder / "config.json").write_text(json.dumps({"model_type": "fourfold-decoder"})),
            "no auto_map",
        ),
    ],
)
def test_incomplete_folders_are_refused_naming_the_fix(tmp_path, damage, message):
    save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    damage(tmp_path)
    with pytest.raises(PushError, match=message):
        files_to_upload(tmp_path)
    with pytest.raises(PushError, match="is not a folder"):
        files_to_upload(tmp_path / "missing")


# --------------------------------------------------------------------------------------------------------------------
# Access checks: each fails before anything is written or sent
# --------------------------------------------------------------------------------------------------------------------


def test_offline_mode_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PushError, match="HF_HUB_OFFLINE is set"):
        check_hub_access("hf_token")


def test_missing_token_is_named(online, monkeypatch):
    monkeypatch.setattr("fourfold.training.push.get_token", lambda: None)
    with pytest.raises(PushError, match="No Hugging Face token found — set HF_TOKEN"):
        check_hub_access()


def test_unreachable_hub_is_reported(online):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PushError, match=rf"Cannot reach http://127.0.0.1:{port}"):
        check_hub_access("hf_token", endpoint=f"http://127.0.0.1:{port}")


@pytest.fixture()
def fake_hub():
    """A local server answering whoami-v2: 200 for the token "good", 401 otherwise."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/api/whoami-v2" and self.headers.get("authorization") == "Bearer good"
            body = json.dumps({"name": "me"} if ok else {"error": "Invalid credentials"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_token_is_checked_against_the_hub(online, fake_hub):
    assert check_hub_access("good", endpoint=fake_hub) == ("good", "me")
    with pytest.raises(PushError, match=r"rejected the token \(401\)"):
        check_hub_access("bad", endpoint=fake_hub)


def test_cli_fails_clearly_before_touching_the_folder(trained, monkeypatch, capsys):
    folder = trained[0]
    before = (folder / "README.md").read_text()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli_main(["push", str(folder), "me/fourfold-decoder-tiny"]) == 2
    assert "fourfold push: error: HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert cli_main(["push", str(folder), "not a repo id"]) == 2
    assert "is not a Hub repository name" in capsys.readouterr().err
    assert (folder / "README.md").read_text() == before  # no card written


# --------------------------------------------------------------------------------------------------------------------
# The commit that would be made
# --------------------------------------------------------------------------------------------------------------------


class RecordingApi:
    """Stands in for HfApi: records the calls push makes, in order."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        contents = {}
        for operation in operations:
            source = operation.path_or_fileobj
            contents[operation.path_in_repo] = source if isinstance(source, bytes) else open(source, "rb").read()
        self.calls.append(("create_commit", repo_id, {**kwargs, "contents": contents}))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_push_commits_exactly_the_file_set_with_a_fresh_card(tmp_path):
    save_checkpoint(tmp_path, "seq2seq", FourfoldSeq2SeqForConditionalGeneration)
    api = RecordingApi()
    url = push(tmp_path, "me/fourfold-seq2seq-tiny", private=True, revision="v1", api=api)
    assert url == "https://huggingface.co/me/fourfold-seq2seq-tiny/commit/abc"
    (create_repo, create_branch, create_commit) = api.calls
    assert create_repo == (
        "create_repo",
        "me/fourfold-seq2seq-tiny",
        {"private": True, "exist_ok": True, "repo_type": "model"},
    )
    assert create_branch[2] == {"branch": "v1", "exist_ok": True}
    contents = create_commit[2]["contents"]
    assert sorted(contents) == files_to_upload(tmp_path)
    assert create_commit[2]["revision"] == "v1"
    assert json.loads(contents["config.json"])["custom_pipelines"]["fourfold-text2text"]["impl"] == (
        "pipelines.FourfoldText2TextPipeline"
    )
    card = contents["README.md"].decode()
    assert MARKER in card and 'repo, revision = "me/fourfold-seq2seq-tiny", "v1"' in card
    assert contents["model.safetensors"] == (tmp_path / "model.safetensors").read_bytes()


def test_keep_card_uploads_the_readme_as_it_is(tmp_path):
    save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    with pytest.raises(PushError, match=r"has no README\.md"):
        push(tmp_path, "me/x", keep_card=True, api=RecordingApi())
    (tmp_path / "README.md").write_text("# my own card\n")
    api = RecordingApi()
    push(tmp_path, "me/x", keep_card=True, api=api)
    assert api.calls[-1][2]["contents"]["README.md"] == b"# my own card\n"


def test_an_edited_card_is_kept_unless_asked(tmp_path, capsys):
    save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    push(tmp_path, "me/x", api=RecordingApi())  # writes fourfold's card
    readme = tmp_path / "README.md"
    first = readme.read_text()
    api = RecordingApi()
    push(tmp_path, "me/x", revision="v2", api=api)  # unedited: rewritten from the folder (now naming v2)
    assert readme.read_text() != first and 'revision = "me/x", "v2"' in readme.read_text()
    readme.write_text(readme.read_text().replace("## Training", "## Training\n\nMy notes on the data."))
    edited = readme.read_text()
    for dry_run in (False, True):
        if dry_run:
            export_for_hub(tmp_path, tmp_path / "dry", repo_id="me/x")
        else:
            push(tmp_path, "me/x", api=api)
            assert api.calls[-1][2]["contents"]["README.md"] == edited.encode()
        assert readme.read_text() == edited and "it was edited since fourfold wrote it" in capsys.readouterr().out
    assert (tmp_path / "dry" / "README.md").read_text() == edited
    push(tmp_path, "me/x", api=api, rewrite_card=True)
    assert "My notes" not in readme.read_text()


def test_dry_run_checks_what_push_checks(tmp_path):
    save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    with pytest.raises(PushError, match="is not a Hub repository name"):
        export_for_hub(tmp_path, tmp_path / "dry", repo_id="not a repo id")
    with pytest.raises(PushError, match="--keep-card, but"):
        export_for_hub(tmp_path, tmp_path / "dry", keep_card=True, repo_id="me/x")
    assert not (tmp_path / "dry").exists() and not (tmp_path / "README.md").exists()


@pytest.mark.parametrize("module", ["/etc/hostname", "../outside", "owner/repo--modeling_fourfold"])
def test_code_outside_the_folder_is_never_uploaded(tmp_path, module):
    save_checkpoint(tmp_path, "decoder", FourfoldDecoderForCausalLM)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"]["AutoModel"] = f"{module}.FourfoldDecoderModel"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(PushError, match="that is not a module of the folder"):
        files_to_upload(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# The file set alone loads without fourfold
# --------------------------------------------------------------------------------------------------------------------

WITHOUT_FOURFOLD = textwrap.dedent(
    """
    import json, math, sys
    import transformers
    from transformers import AutoTokenizer, pipeline

    def close(got, want):  # scores may differ in the last bits across thread counts
        if isinstance(want, float):
            return math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6)
        if isinstance(want, (list, dict)):
            pairs = zip(got, want) if isinstance(want, list) else ((got[k], want[k]) for k in want)
            return len(got) == len(want) and all(close(g, w) for g, w in pairs)
        return got == want

    for case in json.load(open(sys.argv[1])):
        folder = case["folder"]
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = getattr(transformers, case["auto_class"]).from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert len(tokenizer) == model.config.vocab_size
        pipe = pipeline(case["task"], model=folder, trust_remote_code=True)
        assert type(pipe.model).__module__.startswith("transformers_modules."), type(pipe.model).__module__
        result = pipe(*case["args"], **case["kwargs"])
        assert close(result, case["expected"]), (case["task"], result, case["expected"])
        if case["task"].startswith("fourfold-"):  # shipped with the code; the checkpoint's only custom task
            assert type(pipe).__module__.startswith("transformers_modules."), type(pipe).__module__
            assert pipeline(model=folder, trust_remote_code=True).task == case["task"]
        print("ok", case["task"])
    """
)


def test_uploaded_file_set_alone_loads_and_runs_pipelines_without_fourfold(trained, tmp_path):
    seq2seq, qa = tmp_path / "seq2seq", tmp_path / "qa"
    save_checkpoint(seq2seq, "seq2seq", FourfoldSeq2SeqForConditionalGeneration)
    save_checkpoint(qa, "encoder", FourfoldEncoderForQuestionAnswering)
    question = {"question": "where did the cat sit ?", "context": "the cat sat on the mat"}
    specs = [
        (
            trained[0],
            "AutoModelForCausalLM",
            "text-generation",
            ["the cat sat"],
            dict(max_new_tokens=4, do_sample=False, add_special_tokens=False),
        ),
        (
            seq2seq,
            "AutoModelForSeq2SeqLM",
            "fourfold-text2text",
            ["the cat sat on the mat"],
            dict(max_new_tokens=5, min_new_tokens=3),
        ),
        (qa, "AutoModelForQuestionAnswering", "fourfold-question-answering", [], question),
    ]
    cases = []
    for folder, auto_class, task, args, kwargs in specs:
        # Expected: the same pipeline with fourfold imported, on the original folder.
        expected = pipeline(task, model=str(folder))(*args, **kwargs)
        hub_copy = tmp_path / f"hub-{folder.name}"
        names = export_for_hub(folder, hub_copy)
        copied = sorted(path.relative_to(hub_copy).as_posix() for path in hub_copy.rglob("*") if path.is_file())
        assert copied == names == files_to_upload(folder)  # with the encoder's 1_Pooling/config.json
        case = dict(folder=str(hub_copy), auto_class=auto_class, task=task, args=args, kwargs=kwargs)
        case["expected"] = json.loads(json.dumps(expected, default=float))
        cases.append(case)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    stdout = run_without_fourfold(WITHOUT_FOURFOLD, tmp_path / "cases.json", tmp_path)
    assert stdout.count("ok ") == len(cases)
