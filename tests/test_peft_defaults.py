"""PEFT's default target modules for fourfold models: registered by `import fourfold`, and by the Hub code itself
when a script imported peft before loading a checkpoint with `trust_remote_code=True` (fourfold not installed).

Each check runs in a fresh interpreter, so nothing registered by other tests can make it pass.
"""

import subprocess
import sys
import textwrap

from conftest import tiny_config
from remote_code import run_without_fourfold

from fourfold.modeling import FourfoldDecoderForCausalLM


def test_import_fourfold_registers_the_defaults():
    script = textwrap.dedent(
        """
        import fourfold
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers import AutoModelForCausalLM
        from fourfold.configuration import get_config

        model = AutoModelForCausalLM.from_config(get_config("decoder-tiny", vocab_size=101))
        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM))
        print(sorted({n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']" in out


def test_hub_code_registers_them_when_peft_is_imported_first(tmp_path):
    FourfoldDecoderForCausalLM(tiny_config("decoder")).save_pretrained(tmp_path / "decoder")
    script = """
    import sys
    import peft
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM))
    print(sorted({n.split(".")[-4] for n, _ in model.named_parameters() if "lora_A" in n}))
    """
    out = run_without_fourfold(script, tmp_path / "decoder", tmp_path)
    assert "['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']" in out
