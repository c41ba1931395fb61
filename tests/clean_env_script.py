"""Run by `test_clean_env.py` twice: imported by the test (with fourfold), and as a script by the clean
environment's Python (torch and transformers only), so both sides compute the same things the same way.

    python clean_env_script.py WORK_DIR

loads every checkpoint of WORK_DIR/manifest.json through its Auto class with `trust_remote_code=True`, runs it on
WORK_DIR/inputs.pt and saves the outputs to WORK_DIR/results.pt.
"""

import importlib.util
import json
import sys

import torch
import transformers


def run(model, inputs: dict[str, torch.Tensor], generates: bool) -> dict[str, torch.Tensor]:
    """The first output (logits, or the last hidden state of a base model), and greedy and beam generations."""
    kwargs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
    if model.config.is_encoder_decoder and "SequenceClassification" not in type(model).__name__:
        kwargs["decoder_input_ids"] = inputs["decoder_input_ids"]
    with torch.no_grad():
        outputs = model(**kwargs)
    result = {"output": outputs.logits if "logits" in outputs else outputs.last_hidden_state}
    if generates:
        prompt = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        result["greedy"] = model.generate(**prompt, max_new_tokens=6, do_sample=False)
        result["beam"] = model.generate(**prompt, max_new_tokens=6, do_sample=False, num_beams=3)
    return result


def main(work: str) -> None:
    if importlib.util.find_spec("fourfold") is not None:
        raise SystemExit("fourfold is importable: this is not a clean environment")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    inputs = torch.load(f"{work}/inputs.pt")
    with open(f"{work}/manifest.json") as file:
        manifest = json.load(file)
    results = {}
    for case in manifest:
        auto_class = getattr(transformers, case["auto_class"])
        model = auto_class.from_pretrained(case["path"], trust_remote_code=True).eval()
        results[case["name"]] = {"class": type(model).__name__, **run(model, inputs, case["generates"])}
    results["transformers_version"] = transformers.__version__
    torch.save(results, f"{work}/results.pt")


if __name__ == "__main__":
    main(sys.argv[1])
