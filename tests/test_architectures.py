"""The architecture registry (training/architectures.py) is the one list of the four, and it agrees with modeling/.

Every record fills every role, its classes are the ones `modeling/` registers for its model type, its objectives
build their collators and name only real pretraining arguments, and the registry's four are exactly the model types
`import fourfold` registers with the Auto classes.
"""

import dataclasses

import pytest
from transformers import AutoConfig, AutoModel

from fourfold import modeling
from fourfold.configuration import get_config, preset_names
from fourfold.training.architectures import ARCHITECTURES, BY_MODEL_TYPE, OBJECTIVE_OPTIONS, architecture_of
from fourfold.training.data import FRAMINGS
from fourfold.training.pretrain import ObjectiveArguments
from fourfold.training.tokenizer import ALGORITHMS, train_tokenizer

RECORDS = list(ARCHITECTURES.values())


def test_the_registry_is_the_model_types_modeling_registers():
    assert set(BY_MODEL_TYPE) == set(modeling.AUTO_MAP) == set(modeling.CONFIG_CLASSES)
    for model_type, record in BY_MODEL_TYPE.items():
        assert AutoConfig.for_model(model_type).__class__ is record.config_class
        assert architecture_of(model_type) is record
    assert architecture_of("bert") is None


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_every_record_fills_every_role(record):
    for item in (record, record.tokenizer, record.card, *record.objectives):
        for f in dataclasses.fields(item):
            value = getattr(item, f.name)
            # A template may add nothing on one side; causal LM reads no option; prefix LM supports no prompt method;
            # only the encoder is pooled into sentence embeddings; only a causal LM chats.
            optional = f.name in ("first", "last", "options", "prompt_tuning_tasks", "sentence_pooling")
            optional |= f.name == "chat_template"
            assert optional or value not in (None, "", ()), f"{type(item).__name__}.{f.name} of {record.name} is empty"


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_record_classes_are_what_modeling_registers(record):
    auto_map = modeling.AUTO_MAP[record.model_type]
    assert auto_map["AutoConfig"].endswith(record.config_class.__name__)
    assert auto_map["AutoModel"].endswith(record.base_model.__name__)
    assert record.pretraining_head.__name__ in {target.split(".")[-1] for target in auto_map.values()}
    config = get_config(f"{record.name}-tiny", vocab_size=101)
    assert type(config) is record.config_class
    assert type(AutoModel.from_config(config)) is record.base_model
    assert record.framing in FRAMINGS and record.tokenizer.algorithm in ALGORITHMS
    assert {f"{record.name}-{size}" for size in ("tiny", "small", "base", "large")} <= set(preset_names())


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.name)
def test_objectives_build_their_collators_and_read_real_options(record):
    names = [o.name for o in record.objectives]
    assert len(names) == len(set(names)) and record.objective() is record.objectives[0]
    fields = {f.name for f in dataclasses.fields(ObjectiveArguments)}
    texts = ["call me ishmael some years ago never mind how long precisely"] * 30
    tokenizer = train_tokenizer(texts, record.name, vocab_size=200, num_sentinels=10)
    for objective in record.objectives:
        assert set(objective.options) <= fields
        assert record.objective(objective.name) is objective
        if objective.mode_tokens:
            continue  # the UL2 mixtures need the mode tokens pretrain adds to the tokenizer (tested in test_pretrain)
        collator = objective.collator(tokenizer, ObjectiveArguments(), 0, 16)
        row = {"input_ids": tokenizer(texts[0]).input_ids[:16]}
        batch = collator([row, row])
        assert batch["input_ids"].shape[0] == 2 and "labels" in batch
        assert objective.raw_length(16, ObjectiveArguments()) >= 8
    with pytest.raises(ValueError, match="does not fit the"):
        record.objective("no-such-objective")


def test_objective_options_are_the_objective_specific_arguments():
    every_objective = {"objective", "num_samples", "optimizer"}  # read whatever the objective
    specific = {f.name for f in dataclasses.fields(ObjectiveArguments)} - every_objective
    assert set(OBJECTIVE_OPTIONS) == specific


def test_generative_records_are_the_ones_that_generate():
    assert [r.name for r in RECORDS if r.generates] == ["decoder", "prefix-lm", "seq2seq"]
    for record in RECORDS:
        model = record.pretraining_head(get_config(f"{record.name}-tiny", vocab_size=101))
        assert model.can_generate() == record.generates
