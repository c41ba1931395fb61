"""The code that subclasses transformers keeps to transformers' interfaces, on every release setup.cfg allows.

- Every method a fourfold class overrides from a transformers (or torch) base accepts every call the base accepts:
  the same parameters at the same positions with the same defaults, or a `*args` / `**kwargs` that passes them
  through; it adds no required parameter, and names no parameter the base lacks beyond our documented extras. So a
  rename in transformers (5.24's `past_key_values` -> `cache`) or a new base parameter (`get_encoder(modality=None)`)
  fails here rather than in a user's script.
- The cache goes in under either name and comes out under transformers' own, with the same numbers, and without the
  deprecation notices transformers prints for the old name.
- setup.cfg's transformers range is the one the Hub code records (`compat.TRANSFORMERS_REQUIREMENT`).
- `compat.document_mask` (masking_utils' broadcast path for index-based mask functions) gives what
  `create_bidirectional_mask` gives through vmap, for every attention implementation.
"""

import configparser
import inspect
import logging
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache

import fourfold
from fourfold import modeling
from fourfold.modeling import compat
from tests.conftest import tiny_config

# Parameters our overrides add to a base method on purpose (keyword-only, optional).
EXTRA_PARAMETERS = {"prefix_mask"}
BASES = (PreTrainedModel, GenerationMixin, nn.Module)


def overridden_methods():
    """(class, method name, our function, the base function it overrides), for every fourfold model class."""
    classes = [c for c in vars(modeling).values() if isinstance(c, type) and issubclass(c, PreTrainedModel)]
    found = {}
    for cls in classes:
        for klass in cls.__mro__:
            if not klass.__module__.startswith("fourfold"):
                continue
            for name, ours in vars(klass).items():
                if not inspect.isfunction(ours) or name.startswith("__") or name == "forward":
                    continue
                base = next(
                    (
                        getattr(b, name)
                        for b in cls.__mro__
                        if not b.__module__.startswith("fourfold") and name in vars(b)
                    ),
                    None,
                )
                if base is not None and inspect.isfunction(inspect.unwrap(base)):
                    found[klass.__name__, name] = (klass, name, ours, base)
    return sorted(found.values(), key=lambda item: (item[0].__name__, item[1]))


OVERRIDES = overridden_methods()


def test_the_overrides_include_the_ones_that_broke_before():
    names = {(cls.__name__, name) for cls, name, _, _ in OVERRIDES}
    assert ("FourfoldPrefixLMForCausalLM", "prepare_inputs_for_generation") in names
    assert ("FourfoldPrefixLMForCausalLM", "generate") in names
    assert ("FourfoldPreTrainedModel", "save_pretrained") in names


def signature_problems(ours, base) -> list[str]:
    """What a call valid for `base` could do to `ours` that it should not (see the module docstring)."""
    ours_parameters = list(inspect.signature(ours).parameters.values())
    base_parameters = list(inspect.signature(base).parameters.values())
    kinds = {p.kind for p in ours_parameters}
    var_positional = next((i for i, p in enumerate(ours_parameters) if p.kind is p.VAR_POSITIONAL), None)
    takes_kwargs = inspect.Parameter.VAR_KEYWORD in kinds
    by_name = {p.name: p for p in ours_parameters}
    problems = []
    for index, parameter in enumerate(base_parameters):
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        mine = by_name.get(parameter.name)
        positional = parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)
        if positional and (var_positional is None or index < var_positional):
            if index >= len(ours_parameters) or ours_parameters[index].name != parameter.name:
                problems.append(f"positional parameter {index} is {parameter.name!r} in the base, not here")
                continue
        if mine is None:
            if not takes_kwargs:
                problems.append(f"{parameter.name!r} is not accepted (no parameter of that name, no **kwargs)")
        elif mine.default is not parameter.default and mine.default != parameter.default:
            problems.append(f"{parameter.name!r} defaults to {mine.default!r}, the base's to {parameter.default!r}")
    base_names = {p.name for p in base_parameters}
    for parameter in ours_parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or parameter.name in base_names:
            continue
        if parameter.name not in EXTRA_PARAMETERS:
            problems.append(f"{parameter.name!r} is not a parameter of the base (renamed there?)")
        elif parameter.default is inspect.Parameter.empty or parameter.kind is not parameter.KEYWORD_ONLY:
            problems.append(f"the extra {parameter.name!r} must be keyword-only and optional")
    return problems


@pytest.mark.parametrize(
    ("cls", "name", "ours", "base"), OVERRIDES, ids=[f"{c.__name__}.{n}" for c, n, _, _ in OVERRIDES]
)
def test_overrides_keep_the_base_signature(cls, name, ours, base):
    problems = signature_problems(ours, base)
    assert not problems, f"{cls.__name__}.{name} vs {base.__qualname__} (transformers {transformers.__version__}): " + (
        "; ".join(problems)
    )


def test_the_signature_check_catches_the_old_get_encoder():
    """The override transformers' exporter tripped over: `get_encoder(self)` without `modality`."""

    def get_encoder(self):
        return self

    assert signature_problems(get_encoder, PreTrainedModel.get_encoder)

    def generate(self, inputs=None, prefix_mask=None, **kwargs):  # prefix_mask where generation_config goes
        return inputs

    assert signature_problems(generate, GenerationMixin.generate)


def test_seq2seq_models_have_transformers_get_encoder():
    config = tiny_config("seq2seq")
    for model in (
        modeling.FourfoldSeq2SeqModel(config),
        modeling.FourfoldSeq2SeqForConditionalGeneration(config),
        modeling.FourfoldSeq2SeqEncoderModel(config),
    ):
        encoder = model.get_encoder(modality=None)
        assert encoder is (model.encoder if hasattr(model, "encoder") else model.model.encoder)


# ---------------------------------------------------------------------------------------------------------------------
# The cache under both names
# ---------------------------------------------------------------------------------------------------------------------


def _chunked(model, ids, name: str, **kwargs) -> torch.Tensor:
    cache, logits = None, []
    for start, end in ((0, 4), (4, 5), (5, 7)):
        out = model(ids[:, start:end], use_cache=True, **{name: cache}, **kwargs)
        cache = compat.output_cache(out)
        logits.append(out.logits)
    return torch.cat(logits, dim=1)


@torch.no_grad()
@pytest.mark.parametrize("architecture", ["decoder", "prefix-lm"])
def test_both_cache_names_give_the_same_logits(architecture):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(tiny_config(architecture)).eval()
    ids = torch.randint(3, 101, (2, 7))
    full = model(ids, use_cache=False).logits
    new = _chunked(model, ids, "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = _chunked(model, ids, "past_key_values")
    # The old name is deprecated where transformers renamed it, as for transformers' own models; not before.
    deprecated = [w for w in caught if "`past_key_values` is deprecated" in str(w.message)]
    assert bool(deprecated) == (compat.CACHE_NAME == "cache")
    assert torch.equal(new, old)
    torch.testing.assert_close(new, full, rtol=1e-5, atol=1e-5)


def test_two_different_caches_are_refused():
    model = transformers.AutoModelForCausalLM.from_config(tiny_config("decoder"))
    ids = torch.randint(3, 101, (1, 3))
    with pytest.raises(ValueError, match="Pass only cache="):
        model(ids, cache=DynamicCache(), past_key_values=DynamicCache())


def test_outputs_carry_the_cache_under_transformers_name():
    model = transformers.AutoModelForCausalLM.from_config(tiny_config("decoder")).eval()
    out = model(torch.randint(3, 101, (1, 3)), use_cache=True)
    assert compat.CACHE_NAME in out and isinstance(out[compat.CACHE_NAME], DynamicCache)
    expected = "cache" if transformers.__version__ >= "5.24" else "past_key_values"  # the rename's release
    assert compat.CACHE_NAME == expected


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("architecture", ["encoder", "decoder", "prefix-lm", "seq2seq"])
def test_no_deprecation_notice_in_forward_and_generate(architecture):
    """What transformers 5.24 printed at every forward: "`past_key_values`/`cache_params` are deprecated"."""
    logging.Logger.warning_once.cache_clear()  # transformers prints each notice once per process
    records = _Records()
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(records)
    torch.manual_seed(0)
    config = tiny_config(architecture)
    auto = {"encoder": "AutoModelForMaskedLM", "seq2seq": "AutoModelForSeq2SeqLM"}.get(
        architecture, "AutoModelForCausalLM"
    )
    model = getattr(transformers, auto).from_config(config).eval()
    ids = torch.randint(3, 101, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    try:
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            kwargs = {"decoder_input_ids": ids[:, :3]} if architecture == "seq2seq" else {}
            model(ids, attention_mask=mask, **kwargs)
            if architecture != "encoder":
                model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
                model.generate(ids, attention_mask=mask, max_new_tokens=3, num_beams=2, do_sample=False)
    finally:
        transformers_logger.removeHandler(records)
    notices = [str(w.message) for w in caught if issubclass(w.category, FutureWarning | DeprecationWarning)]
    notices += records.messages
    assert not [n for n in notices if "past_key_values" in n or "deprecated" in n.lower()], notices


# ---------------------------------------------------------------------------------------------------------------------
# What the code says about itself
# ---------------------------------------------------------------------------------------------------------------------


def test_setup_cfg_declares_the_range_the_code_records():
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    requirements = [line.strip() for line in parser["options"]["install_requires"].splitlines() if line.strip()]
    transformers_requirement = next(r for r in requirements if r.startswith("transformers"))
    assert transformers_requirement == "transformers" + compat.TRANSFORMERS_REQUIREMENT
    assert fourfold.__version__ == compat.FOURFOLD_VERSION


def test_installed_transformers_is_in_the_declared_range():
    from packaging.specifiers import SpecifierSet

    assert transformers.__version__ in SpecifierSet(compat.TRANSFORMERS_REQUIREMENT)


def test_saved_config_records_the_code_version(tmp_path):
    model = transformers.AutoModel.from_config(tiny_config("decoder"))
    model.save_pretrained(tmp_path)
    saved = transformers.AutoConfig.from_pretrained(tmp_path)
    assert saved.fourfold == {"version": fourfold.__version__, "transformers": compat.TRANSFORMERS_REQUIREMENT}


@pytest.mark.parametrize("architecture", ["decoder", "prefix-lm", "seq2seq"])
def test_transformers_exporter_takes_the_generative_models(architecture):
    """transformers' own exporter calls `get_encoder(modality=None)`; the seq2seq overrides without it failed."""
    exporters = pytest.importorskip("transformers.exporters.exporter_dynamo")
    from transformers.exporters.configs import DynamoConfig

    torch.manual_seed(0)
    auto = transformers.AutoModelForSeq2SeqLM if architecture == "seq2seq" else transformers.AutoModelForCausalLM
    model = auto.from_config(tiny_config(architecture)).eval()
    ids = torch.randint(3, 101, (1, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter is experimental and says so
        exported = exporters.DynamoExporter().export_for_generation(
            model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, DynamoConfig()
        )
    assert {"prefill", "decode"} <= set(exported.components)


@pytest.mark.parametrize("implementation", ["sdpa", "eager", "flex_attention"])
@pytest.mark.parametrize("cross", [False, True])
def test_document_mask_is_masking_utils_vmap_mask(implementation, cross):
    from transformers.masking_utils import create_bidirectional_mask

    from fourfold.modeling.masks import document_ids, same_document

    config = tiny_config("seq2seq")
    config._attn_implementation = implementation
    queries = torch.zeros(2, 5, 8)
    query_documents = document_ids(torch.tensor([[0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]), 2)
    keys = torch.zeros(2, 4, 8) if cross else None
    key_documents = document_ids(torch.tensor([[0, 1, 0, 1], [0, 0, 1, 2]]), 2) if cross else query_documents
    function = same_document(query_documents, key_documents)
    ours = compat.document_mask(config, queries, function, keys)
    vmapped = create_bidirectional_mask(
        config=config,
        inputs_embeds=queries,
        attention_mask=None,
        encoder_hidden_states=keys,
        and_mask_function=function,
    )
    if implementation == "flex_attention":  # not sdpa's or eager's mask: masking_utils' own call, a BlockMask
        assert type(ours) is type(vmapped) and ours.to_dense().equal(vmapped.to_dense())
        return
    assert ours.dtype == vmapped.dtype and ours.shape == vmapped.shape == (2, 1, 5, 4 if cross else 5)
    assert torch.equal(ours, vmapped) and not (ours == ours.flatten()[0]).all()  # a real pattern, not all-or-none
