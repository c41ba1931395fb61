"""The benchmark script runs end to end at a micro size and writes well-formed results (structure only, no timings)."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("fourfold_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(bench):
    settings = bench.Settings(repeats=1, min_sample_s=0.0, retries=0, memory=False, graph_breaks=False)
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
    assert train["encoder"]["target"] == 1.3 and train["t5"]["target"] == 1.1 and train["prefix-lm"]["target"] == 0.95
    assert train["encoder"]["ours_class"] == "FourfoldEncoderForMaskedLM"
    assert train["encoder"]["peer_class"] == "BertForMaskedLM"
    assert train["t5"]["ours_attn"] == train["t5"]["peer_attn"] == "sdpa"


def test_packing_row_compares_the_same_real_tokens(bench, result):
    (row,) = [row for row in result["sizes"]["micro"]["rows"] if row["pair"] == "packing"]
    assert row["metric"] == "train" and row["unit"] == "non-pad tokens/s" and row["target"] == 1.5
    assert len(row["ours_seconds"]) == len(row["peer_seconds"]) == 1
    assert row["ours"] > 0 and row["peer"] > 0 and math.isclose(row["ratio"], row["ours"] / row["peer"])
    size = bench.SIZES["micro"]
    assert row["real_tokens"] == bench.PACKED_BATCHES * size.batch * size.seq  # per side, the same tokens
    assert row["ours_rows"] == bench.PACKED_BATCHES * size.batch and 0 <= row["peer_padding_fraction"] < 1
    assert row["met"] == (row["ratio"] >= 1.5)


def test_packing_batches_hold_the_same_documents_both_ways(bench):
    size = bench.SIZES["tiny"]  # builds batches only: paragraphs up to 128 tokens, so the padded side pads
    data = bench.packing_batches(size, bench.Settings())
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


def test_json_and_markdown_outputs(bench, result, tmp_path):
    json_path, md_path = bench.write_outputs(result, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert {"machine", "settings", "load_avg_start", "load_avg_end", "matmul_peak", "flops_formula", "sizes"} <= set(
        loaded
    )
    assert {"cpu", "cores", "threads", "torch", "transformers", "date"} <= set(loaded["machine"])
    assert loaded["matmul_peak"]["flops_per_s"] > 0
    markdown = md_path.read_text()
    assert markdown.startswith("Machine: ")
    assert "### micro:" in markdown
    measurements, _, targets = markdown.partition("## Targets")
    table = [line for line in measurements.splitlines() if line.startswith("| ")]
    header, body = table[0], table[1:]  # the |---| rule does not start with "| "
    assert header.startswith("| comparison | metric | ours | peer | ours/peer | target | met |")
    assert len(body) == len(result["sizes"]["micro"]["rows"])
    assert any(line.startswith("| encoder vs BertForMaskedLM | training step") for line in body)
    packing = "| ours llama: packed vs padded (Moby-Dick paragraphs) | training step (non-pad tokens/s) |"
    assert any(line.startswith(packing) for line in body)
    assert "Packed vs padded: the same " in measurements
    summary = [line for line in targets.splitlines() if line.startswith("| ")]
    assert summary[0].startswith("| target | micro: worst measured | met |")
    assert len(summary) == 1 + len(bench.TARGET_SUMMARY)


def test_readme_section_is_replaced_between_markers(bench, result, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.README_START}\nold table\n{bench.README_END}\noutro\n")
    bench.update_readme(result, readme, note="a note")
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old table" not in text
    assert "a note" in text and "### Targets" in text and "### micro:" in text


def test_peak_memory_worker_reports_a_growth(bench):
    settings = bench.Settings()
    measured = bench.peak_training_memory("llama", "ours", bench.SIZES["micro"], settings)
    assert measured["peak_mib"] >= 0 and measured["method"]


def test_flops_count_every_matmul_once(bench):
    size, settings = bench.SIZES["micro"], bench.Settings()
    model = bench.build_model(bench.ours_llama, size, settings)
    h, f, v, layers = size.hidden, model.config.intermediate_size, size.vocab, size.layers
    assert bench.matmul_parameters(model) == layers * (4 * h * h + 3 * h * f) + v * h  # tied LM head once
    gpt2 = bench.build_model(bench.peer_gpt2, size, settings)  # Conv1D layers count too
    assert bench.matmul_parameters(gpt2) == layers * (4 * h * h + 2 * h * 4 * h) + v * h
