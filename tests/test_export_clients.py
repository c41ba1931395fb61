"""Clients that dispatch on a native architecture name take an exported fourfold decoder.

- `transformers serve` (needs `transformers[serving]`), bound to 127.0.0.1, answers a `/v1/completions` request
  with the text greedy `generate()` produces.
- llama.cpp's GGUF converter, from the `llama-cpp-python` sdist (which vendors `convert_hf_to_gguf.py` and its
  `gguf-py`; fetched once with `pip download` into ~/.cache/fourfold-tests, skipped when the index is unreachable),
  converts the exported Llama folder, and the `gguf` package reads back every tensor equal to the exported weights
  (the converter permutes q/k rows for its rotary layout; we undo that with its own formula).

llama.cpp recognises a BPE tokenizer by a hash of how it splits a fixed text, which only released tokenizers have;
a freshly trained fourfold tokenizer uses GPT-2's byte-level pre-tokenizer, so the converter is told "gpt-2".
"""

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import transformers

from fourfold.configuration import get_config
from fourfold.modeling import FourfoldDecoderForCausalLM
from fourfold.training.export import export_checkpoint
from fourfold.training.tokenizer import train_tokenizer

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendored converter this test ran against
CACHE = Path.home() / ".cache" / "fourfold-tests"
TEXT = "call me ishmael some years ago never mind how long precisely having little or no money in my purse"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """A tiny fourfold decoder (the default preset's options: RMSNorm, RoPE, SwiGLU, GQA, tied) with a trained
    tokenizer, saved as fourfold saves it and exported."""
    root = tmp_path_factory.mktemp("clients")
    torch.manual_seed(0)
    model = FourfoldDecoderForCausalLM(get_config("decoder-tiny", vocab_size=300, tie_word_embeddings=False))
    model.save_pretrained(root / "fourfold")
    train_tokenizer([TEXT] * 20, "decoder", 300).save_pretrained(root / "fourfold")
    return export_checkpoint(root / "fourfold", root / "native")


# --------------------------------------------------------------------------------------------------------------------
# transformers serve
# --------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 60) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def test_transformers_serve_answers_what_generate_answers(exported):
    pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving]")
    pytest.importorskip("uvicorn", reason="transformers serve needs transformers[serving]")
    port = free_port()
    command = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve", str(exported)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(
        command,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start: {server.communicate(timeout=5)[1][-2000:]}")
                time.sleep(0.3)
        prompt = "call me ishmael"
        body = dict(model=str(exported), prompt=prompt, max_tokens=8, temperature=0.0)
        answer = post(f"http://127.0.0.1:{port}/v1/completions", body)["choices"][0]["text"]
    finally:
        server.terminate()
        server.wait(timeout=30)

    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    native = transformers.LlamaForCausalLM.from_pretrained(exported).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    generated = native.generate(**inputs, do_sample=False, max_new_tokens=8)[0, inputs["input_ids"].shape[1] :]
    expected = tokenizer.decode(generated, skip_special_tokens=True)
    assert expected and answer == expected


# --------------------------------------------------------------------------------------------------------------------
# llama.cpp's GGUF converter
# --------------------------------------------------------------------------------------------------------------------


def llama_cpp_converter() -> Path:
    """`vendor/llama.cpp` of the llama-cpp-python sdist (the converter, its `conversion` package and `gguf-py`),
    downloaded and extracted once into the cache."""
    root = CACHE / f"llama-cpp-python-{LLAMA_CPP_PYTHON}"
    llama_cpp = root / "vendor" / "llama.cpp"
    if (llama_cpp / "convert_hf_to_gguf.py").is_file():
        return llama_cpp
    download = CACHE / "sdist"
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(download),
         f"llama-cpp-python=={LLAMA_CPP_PYTHON}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    archives = sorted(download.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"))
    if fetched.returncode or not archives:
        pytest.skip(f"llama-cpp-python's sdist could not be downloaded (index unreachable?): {fetched.stderr[-300:]}")
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    wanted = (prefix + "convert_hf_to_gguf.py", prefix + "conversion/", prefix + "gguf-py/")
    partial = root.with_suffix(".partial")
    with tarfile.open(archives[0]) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(wanted) and (m.isfile() or m.isdir())]
        for member in members:
            member.name = member.name.split("/", 1)[1]  # drop the sdist's top folder
        archive.extractall(partial, members=members, filter="data")
    partial.rename(root)  # whole or not at all: a broken extraction is never taken for the cache
    return llama_cpp


# Runs the converter with our tokenizer's pre-tokenizer named (see the module docstring), in its own process so its
# vendored `gguf-py` never meets the installed `gguf`.
CONVERT = """
import runpy, sys
llama_cpp, model, outfile = sys.argv[1:]
sys.path.insert(0, llama_cpp)
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv = ["convert_hf_to_gguf.py", model, "--outfile", outfile, "--outtype", "f32"]
runpy.run_path(llama_cpp + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def llama_cpp_permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's q/k row order for rotary halves (its `LlamaModel.permute`): (heads, 2, hd/2, in) -> (heads,
    hd/2, 2, in)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def gguf_name(key: str) -> str:
    """transformers' Llama weight name -> GGUF's."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if key in names or key == "lm_head.weight":
        return names.get(key, "output.weight")
    layer, rest = key.removeprefix("model.layers.").split(".", 1)
    parts = {
        "self_attn.q_proj.weight": "attn_q",
        "self_attn.k_proj.weight": "attn_k",
        "self_attn.v_proj.weight": "attn_v",
        "self_attn.o_proj.weight": "attn_output",
        "mlp.gate_proj.weight": "ffn_gate",
        "mlp.up_proj.weight": "ffn_up",
        "mlp.down_proj.weight": "ffn_down",
        "input_layernorm.weight": "attn_norm",
        "post_attention_layernorm.weight": "ffn_norm",
    }
    return f"blk.{layer}.{parts[rest]}.weight"


def test_llama_cpp_converts_the_export_to_gguf_with_the_same_weights(exported, tmp_path):
    gguf = pytest.importorskip("gguf", reason="reading GGUF back needs the gguf package")
    pytest.importorskip("sentencepiece", reason="llama.cpp's converter imports sentencepiece")
    llama_cpp = llama_cpp_converter()
    outfile = tmp_path / "model.gguf"
    converted = subprocess.run(
        [sys.executable, "-c", CONVERT, str(llama_cpp), str(exported), str(outfile)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr[-3000:]

    reader = gguf.GGUFReader(outfile)
    architecture = reader.fields["general.architecture"]
    assert bytes(architecture.parts[architecture.data[0]]).decode() == "llama"
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    native = transformers.LlamaForCausalLM.from_pretrained(exported)
    config = native.config
    weights = native.state_dict()
    assert set(tensors) == {gguf_name(k) for k in weights}
    for key, weight in weights.items():
        if key.endswith("q_proj.weight"):
            weight = llama_cpp_permute(weight, config.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            weight = llama_cpp_permute(weight, config.num_key_value_heads)
        assert torch.equal(tensors[gguf_name(key)].reshape(weight.shape), weight), key
