"""Saved checkpoints load and run where fourfold is not installed: a fresh virtual environment with only torch and
transformers, the Auto classes and `trust_remote_code=True`; under the oldest transformers setup.cfg allows and
under the newest, whichever of them saved the checkpoints (each CI leg saves with its own).

This process builds tiny models of the four configurations, saves each head under test, and records its outputs
(and greedy / beam generations); a script run by each clean environment's Python loads every checkpoint through the
Auto class a user would pick and records the same. Outputs must match exactly. The environments are cached under
`<repo>/.cache/clean-env/` (about 1 GiB each; the first run installs them from the package index, ~2 minutes each;
the "newest" one is the newest release when it was built: delete it to take a later one).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers

from fourfold.configuration import get_config
from fourfold.modeling import (
    FourfoldDecoderForCausalLM,
    FourfoldDecoderForSequenceClassification,
    FourfoldDecoderModel,
    FourfoldEncoderForMaskedLM,
    FourfoldEncoderForSequenceClassification,
    FourfoldEncoderModel,
    FourfoldPrefixLMForCausalLM,
    FourfoldPrefixLMForSequenceClassification,
    FourfoldPrefixLMModel,
    FourfoldSeq2SeqForConditionalGeneration,
    FourfoldSeq2SeqForSequenceClassification,
    FourfoldSeq2SeqModel,
)
from fourfold.modeling.compat import TRANSFORMERS_REQUIREMENT
from tests import clean_env_script
from tests.clean_env_script import run

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
TORCH_VERSION = torch.__version__.split("+")[0]
OLDEST = TRANSFORMERS_REQUIREMENT.split(",")[0].removeprefix(">=")  # ">=5.23,<6" -> "5.23"
# The clean environments' transformers: the oldest release allowed, and the newest (what pip resolves today).
TRANSFORMERS_SPECS = {"oldest": f"transformers=={OLDEST}", "newest": f"transformers{TRANSFORMERS_REQUIREMENT}"}

# (architecture, saved class, Auto class that loads it, generates?)
CASES = [
    ("encoder", FourfoldEncoderModel, "AutoModel", False),
    ("encoder", FourfoldEncoderForMaskedLM, "AutoModelForMaskedLM", False),
    ("encoder", FourfoldEncoderForSequenceClassification, "AutoModelForSequenceClassification", False),
    ("decoder", FourfoldDecoderModel, "AutoModel", False),
    ("decoder", FourfoldDecoderForCausalLM, "AutoModelForCausalLM", True),
    ("decoder", FourfoldDecoderForSequenceClassification, "AutoModelForSequenceClassification", False),
    ("prefix-lm", FourfoldPrefixLMModel, "AutoModel", False),
    ("prefix-lm", FourfoldPrefixLMForCausalLM, "AutoModelForCausalLM", True),
    ("prefix-lm", FourfoldPrefixLMForSequenceClassification, "AutoModelForSequenceClassification", False),
    ("seq2seq", FourfoldSeq2SeqModel, "AutoModel", False),
    ("seq2seq", FourfoldSeq2SeqForConditionalGeneration, "AutoModelForSeq2SeqLM", True),
    ("seq2seq", FourfoldSeq2SeqForSequenceClassification, "AutoModelForSequenceClassification", False),
]


def clean_env_python(which: str) -> tuple[Path, str]:
    """The Python of the cached clean environment `which` ("oldest" / "newest") and its transformers version,
    created on first use (skips if the package index is unreachable)."""
    venv_dir = REPO_ROOT / ".cache" / "clean-env" / f"torch-{TORCH_VERSION}-transformers-{which}"
    python = venv_dir / "bin" / "python"
    ready = venv_dir / "READY"  # written last, holding the version: a half-built environment is rebuilt
    if ready.exists():
        return python, ready.read_text().strip()
    shutil.rmtree(venv_dir, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)  # no system site-packages
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    install += [f"torch=={TORCH_VERSION}", TRANSFORMERS_SPECS[which]]
    result = subprocess.run(install, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        shutil.rmtree(venv_dir, ignore_errors=True)
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"could not install torch and {TRANSFORMERS_SPECS[which]} into a clean environment: {tail[0]}")
    version = subprocess.run(
        [str(python), "-c", "import transformers; print(transformers.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ready.write_text(version)
    return python, version


def case_name(architecture: str, model_class: type) -> str:
    return f"{architecture}:{model_class.__name__}"


@pytest.fixture(scope="module", params=list(TRANSFORMERS_SPECS))
def comparison(request, tmp_path_factory):
    """(what this process computed, what the clean environment computed), keyed by case name, for the clean
    environment with the oldest and with the newest transformers."""
    python, version = clean_env_python(request.param)
    work = tmp_path_factory.mktemp(f"clean_env_{request.param}")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    input_ids = torch.randint(3, 101, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0  # left padding, as batched generation uses
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": input_ids[:, :5]}
    torch.save(inputs, work / "inputs.pt")

    expected, manifest = {}, []
    for architecture, model_class, auto_class, generates in CASES:
        name = case_name(architecture, model_class)
        path = work / name.replace(":", "-")
        config = get_config(f"{architecture}-tiny", vocab_size=101, num_labels=3)
        model = model_class(config).eval()
        model.save_pretrained(path)
        expected[name] = {"class": model_class.__name__, **run(model, inputs, generates)}
        manifest.append({"name": name, "path": str(path), "auto_class": auto_class, "generates": generates})
    (work / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(clean_env_script.__file__, work / "clean_env_script.py")

    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(work / "hf_home"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(python), str(work / "clean_env_script.py"), str(work)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (
        f"the clean environment (transformers {version}) failed to load or run checkpoints saved with transformers "
        f"{transformers.__version__}:\n{result.stderr}"
    )
    got = torch.load(work / "results.pt")
    assert got["transformers_version"] == version
    return expected, got


@pytest.mark.parametrize(
    ("architecture", "model_class", "auto_class", "generates"), CASES, ids=[case_name(*case[:2]) for case in CASES]
)
def test_checkpoint_runs_without_fourfold(comparison, architecture, model_class, auto_class, generates):
    expected, got = comparison
    name = case_name(architecture, model_class)
    assert got[name]["class"] == model_class.__name__, f"{auto_class} built {got[name]['class']}"
    torch.testing.assert_close(got[name]["output"], expected[name]["output"], rtol=0, atol=0)
    if generates:
        assert torch.equal(got[name]["greedy"], expected[name]["greedy"])
        assert torch.equal(got[name]["beam"], expected[name]["beam"])
