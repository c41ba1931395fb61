"""The benchmark runs end to end at a micro size and writes well-formed results (structure only, no timings); its
targets are one list that every verdict, summary line and the README's list of targets read."""

import json
import math
import subprocess
import sys
from fnmatch import fnmatchcase
from itertools import product
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # as `python benchmarks/bench.py` has it: the modules import each other by name

import bench  # noqa: E402
import memory  # noqa: E402
import mfu  # noqa: E402
import packing  # noqa: E402
import pairs  # noqa: E402
import report  # noqa: E402
import targets  # noqa: E402
from settings import SIZES, Settings  # noqa: E402

from fourfold.configuration.presets import ARCHITECTURE_OPTIONS, bart_like, bert_like, gpt2_like, llama_like  # noqa: E402

METRICS = ("train", "mfu", "forward", "generate_b1", "generate_b2", "generate_b8", "memory", "graph_breaks")
COMPARISONS = (*pairs.PAIRS, *pairs.EXTRA_COMPARISONS, *(f"compile-{name}" for name in targets.GRAPH_BREAK_MODELS))


@pytest.fixture(scope="module")
def result():
    settings = Settings(repeats=1, min_sample_s=0.0, retries=0, memory=False, graph_breaks=False)
    return bench.run_benchmark(["micro"], settings, pairs=["encoder", "prefix-lm", "t5"], log=lambda message: None)


def test_rows_cover_every_metric_of_every_pair(result):
    rows = result["sizes"]["micro"]["rows"]
    metrics = {(row["pair"], row["metric"]) for row in rows}
    assert {("encoder", m) for m in ("train", "mfu", "forward")} <= metrics
    assert ("encoder", "generate_b1") not in metrics  # an encoder does not generate
    for pair in ("prefix-lm", "t5"):
        assert {(pair, m) for m in ("train", "mfu", "forward", "generate_b1", "generate_b2")} <= metrics
    for row in rows:
        assert {"pair", "metric", "unit", "ours", "peer", "ratio", "target", "met", "lower_is_better"} <= set(row)
        if row["metric"] in ("train", "forward") or row["metric"].startswith("generate"):
            assert len(row["ours_seconds"]) == len(row["peer_seconds"]) == 1
            assert row["ours"] > 0 and row["peer"] > 0 and math.isclose(row["ratio"], row["ours"] / row["peer"])
    train = {row["pair"]: row for row in rows if row["metric"] == "train"}
    assert train["encoder"]["ours_class"] == "FourfoldEncoderForMaskedLM"
    assert train["encoder"]["peer_class"] == "BertForMaskedLM"
    assert train["t5"]["ours_attn"] == train["t5"]["peer_attn"] == "sdpa"


def test_every_row_records_the_target_of_the_list(result):
    rows = result["sizes"]["micro"]["rows"]
    for row in rows:
        target = targets.target_for(row["pair"], row["metric"], "micro", "cpu")
        assert row["target"] == (None if target is None else target.threshold), (row["pair"], row["metric"])
        assert row["met"] == (None if target is None else target.holds(target.value(row)))
    judged = {(row["pair"], row["metric"]) for row in rows if row["target"] is not None}
    assert {("encoder", "train"), ("prefix-lm", "train"), ("t5", "train"), ("t5", "forward")} <= judged
    assert ("prefix-lm", "forward") not in judged  # its peer is our own decoder: training is its only target
    assert not any(metric == "mfu" for _, metric in judged)  # MFU is judged at the small size only


def test_targets_are_well_formed_and_never_overlap():
    for target in targets.TARGETS:
        assert set(target.pairs) <= set(COMPARISONS), target.label
        assert all(any(fnmatchcase(m, p) for m in METRICS) for p in target.metrics), target.label
        assert target.rationale and "{" not in target.text, target.label
    for pair, metric, size, device in product(COMPARISONS, METRICS, SIZES, ("cpu", "cuda")):
        rows_targets = [
            t for t in targets.TARGETS if not t.summary_only and t.covers(pair, metric, device) and t.judged_at(size)
        ]
        assert len(rows_targets) <= 1, (pair, metric, size, device, [t.label for t in rows_targets])


def test_packing_row_compares_the_same_real_tokens(result):
    (row,) = [row for row in result["sizes"]["micro"]["rows"] if row["pair"] == "packing"]
    target = targets.target_for("packing", "train", "micro", "cpu")
    assert row["metric"] == "train" and row["unit"] == "non-pad tokens/s" and row["target"] == target.threshold
    assert len(row["ours_seconds"]) == len(row["peer_seconds"]) == 1
    assert row["ours"] > 0 and row["peer"] > 0 and math.isclose(row["ratio"], row["ours"] / row["peer"])
    size = SIZES["micro"]
    assert row["real_tokens"] == packing.PACKED_BATCHES * size.batch * size.seq  # per side, the same tokens
    assert row["ours_rows"] == packing.PACKED_BATCHES * size.batch and 0 <= row["peer_padding_fraction"] < 1
    assert row["met"] == (row["ratio"] >= target.threshold)


def test_packing_batches_hold_the_same_documents_both_ways():
    size = SIZES["tiny"]  # builds batches only: paragraphs up to 128 tokens, so the padded side pads
    data = packing.packing_batches(size, Settings())
    packed, padded = data["packed"], data["padded"]
    assert all("attention_mask" not in batch and "position_ids" in batch for batch in packed)
    assert all(batch["input_ids"].shape == (size.batch, size.seq) for batch in packed)
    assert all(len(batch["input_ids"]) <= size.batch and batch["input_ids"].shape[1] <= size.seq for batch in padded)
    real = [batch["input_ids"][batch["attention_mask"].bool()] for batch in padded]  # the documents, in order
    assert torch.equal(torch.cat(real), torch.cat([batch["input_ids"].flatten() for batch in packed]))
    assert data["real_tokens"] == sum(len(r) for r in real) and 0.2 < data["padding_fraction"] < 0.8
    for batch in padded:  # pads are masked out and never predicted
        assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    starts = sum(int((batch["position_ids"] == 0).sum()) for batch in packed)
    assert starts >= data["documents"]  # every document restarts the positions (and every row start does too)


def test_json_and_markdown_outputs(result, tmp_path):
    json_path, md_path = report.write_outputs(result, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert {"machine", "settings", "load_avg_start", "load_avg_end", "matmul_peak", "flops_formula", "sizes"} <= set(
        loaded
    )
    assert {"cpu", "cores", "threads", "torch", "transformers", "date"} <= set(loaded["machine"])
    assert loaded["matmul_peak"]["flops_per_s"] > 0
    markdown = md_path.read_text()
    assert markdown.startswith("Machine: ")
    assert "### micro:" in markdown
    measurements, _, summary_text = markdown.partition("## Targets")
    table = [line for line in measurements.splitlines() if line.startswith("| ")]
    header, body = table[0], table[1:]  # the |---| rule does not start with "| "
    assert header.startswith("| comparison | metric | ours | peer | ours/peer | target | met |")
    assert len(body) == len(result["sizes"]["micro"]["rows"])
    assert any(line.startswith("| encoder vs BertForMaskedLM | training step") for line in body)
    packed = "| ours llama: packed vs padded (Moby-Dick paragraphs) | training step (non-pad tokens/s) |"
    assert any(line.startswith(packed) for line in body)
    assert "Packed vs padded: the same " in measurements
    summary = [line for line in summary_text.splitlines() if line.startswith("| ")]
    assert summary[0].startswith("| target | micro: worst measured | met |")
    on_cpu = [target.text for target in targets.TARGETS if target.judged_on("cpu")]  # the GPU target is left out
    assert [line.split(" | ")[0].removeprefix("| ") for line in summary[1:]] == on_cpu


def test_readme_sections_are_replaced_between_markers(result, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        f"intro\n{report.TARGETS_START}\nold list\n{report.TARGETS_END}\n"
        f"middle\n{report.README_START}\nold table\n{report.README_END}\noutro\n"
    )
    report.update_readme(result, readme, note="a note")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "\nmiddle\n" in text
    assert "old table" not in text and "old list" not in text
    assert "a note" in text and "### Targets" in text and "### micro:" in text
    assert report.targets_list() in text


def test_benchmarks_readme_reads_the_targets_list():
    """The README's list of targets is the one `report.targets_list` renders, and its measured summary (from the
    last full run) has one line per CPU target, in the list's words."""
    text = (BENCHMARKS / "README.md").read_text()
    assert report.update_targets_list(text) == text, "run report.update_targets_list on benchmarks/README.md"
    measured = text.partition(report.README_START)[2].partition("### All measurements")[0]
    labels = [line.split(" | ")[0].removeprefix("| ") for line in measured.splitlines() if line.startswith("| ")]
    assert labels[1:] == [target.text for target in targets.TARGETS if target.judged_on("cpu")]


@pytest.mark.parametrize(
    ("pair", "flavour"),
    [
        ("encoder", bert_like()),
        ("gpt2", gpt2_like()),
        ("llama", llama_like(tie_word_embeddings=True)),  # tied on both sides of the comparison
        ("prefix-lm", llama_like(tie_word_embeddings=True)),
        ("bart", bart_like()),
    ],
)
def test_ours_is_built_from_the_flavour(pair, flavour):
    config = pairs.PAIRS[pair].ours(SIZES["micro"]).config
    expected = type(config)(**flavour)  # as the config class completes it (transformers fills in rope_parameters)
    for name in ARCHITECTURE_OPTIONS:
        assert getattr(config, name) == getattr(expected, name), name


def test_peak_memory_worker_reports_a_growth():
    measured = memory.peak_training_memory("llama", "ours", SIZES["micro"], Settings())
    assert measured["peak_mib"] >= 0 and measured["method"]


def test_memory_runs_in_a_subprocess_of_the_script():
    measured = memory.memory_in_subprocess("llama", "ours", "micro", Settings(threads=1))
    assert "error" not in measured, measured.get("error")
    assert measured["peak_mib"] >= 0 and measured["method"].startswith("VmHWM")


def test_help_from_the_repository_root():
    done = subprocess.run(
        [sys.executable, "benchmarks/bench.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "--size" in done.stdout and "--update-readme" in done.stdout


def test_flops_count_every_matmul_once():
    size, settings = SIZES["micro"], Settings()
    model = pairs.build_model(pairs.ours_llama, size, settings)
    h, f, v, layers = size.hidden, model.config.intermediate_size, size.vocab, size.layers
    assert mfu.matmul_parameters(model) == layers * (4 * h * h + 3 * h * f) + v * h  # tied LM head once
    gpt2 = pairs.build_model(pairs.peer_gpt2, size, settings)  # Conv1D layers count too
    assert mfu.matmul_parameters(gpt2) == layers * (4 * h * h + 2 * h * 4 * h) + v * h


def test_time_to_target_interpolates_the_first_crossing():
    import time_to_target

    curve = [(0, 8.0), (10, 6.0), (20, 5.0), (30, 4.0), (40, 4.5)]
    assert time_to_target.steps_to_target(curve, 5.5) == 15.0  # between 6.0 at 10 and 5.0 at 20
    assert time_to_target.steps_to_target(curve, 4.0) == 30.0
    assert time_to_target.steps_to_target(curve, 3.9) is None
    assert time_to_target.parse_variant('x:lr_scheduler_type=cosine;config_overrides={"a": 1, "b": 2}') == (
        "x",
        ["--lr_scheduler_type", "cosine", "--config_overrides", '{"a": 1, "b": 2}'],
    )


def test_time_to_target_quick_run_writes_every_configuration(tmp_path):
    import time_to_target

    flags = ["--quick", "--threads", "1", "--out", str(tmp_path), "--variant", "adamw:optimizer=adamw"]
    assert time_to_target.main(flags) == 0  # ~11 s of CPU
    result = json.loads((tmp_path / "time_to_target.json").read_text())
    assert [row["configuration"] for row in result["configurations"]] == ["encoder", "decoder", "seq2seq"]
    peers = {row["configuration"]: row["peer"]["model"] for row in result["configurations"]}
    assert peers == {
        "encoder": "BertForMaskedLM",
        "decoder": "LlamaForCausalLM",
        "seq2seq": "BartForConditionalGeneration",
    }
    for row in result["configurations"]:
        assert row["target"] == row["peer"]["final_loss"] and row["held_out_predicted_tokens"] > 0
        assert set(row["ours"]) == {"adamw"} and row["ours"]["adamw"]["settings"] == ["--optimizer", "adamw"]
        for ours in row["ours"].values():
            assert ours["steps"] == 4 and [s for s, _ in ours["curve"]] == [0, 2, 4]
            assert ours["seconds_per_step"] > 0 and math.isfinite(ours["final_loss"])
            if ours["steps_to_target"] is not None:
                assert math.isclose(ours["seconds_to_target"], ours["steps_to_target"] * ours["seconds_per_step"])
    assert "| encoder |" in (tmp_path / "time_to_target.md").read_text()
