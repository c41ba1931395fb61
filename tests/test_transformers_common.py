"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`) over every fourfold model class.

The tests come from the transformers sdist on PyPI (see `tests/transformers_common`); without network access and an
empty cache the module skips. Each skip below names why that common test does not apply to fourfold.
"""

import unittest

import pytest

from tests.transformers_common import Unavailable, load, registered_names
from tests.transformers_common.testers import FourfoldModelTester

try:
    hf_common = load()
except Unavailable as error:
    pytest.skip(f"transformers' common tests are unavailable: {error}", allow_module_level=True)

from fourfold.modeling import (
    FourfoldDecoderConfig,
    FourfoldDecoderForCausalLM,
    FourfoldDecoderForSequenceClassification,
    FourfoldDecoderForTokenClassification,
    FourfoldDecoderModel,
    FourfoldEncoderConfig,
    FourfoldEncoderForMaskedLM,
    FourfoldEncoderForMultipleChoice,
    FourfoldEncoderForQuestionAnswering,
    FourfoldEncoderForSequenceClassification,
    FourfoldEncoderForTokenClassification,
    FourfoldEncoderModel,
    FourfoldPrefixLMConfig,
    FourfoldPrefixLMForCausalLM,
    FourfoldPrefixLMForSequenceClassification,
    FourfoldPrefixLMModel,
    FourfoldSeq2SeqConfig,
    FourfoldSeq2SeqEncoderModel,
    FourfoldSeq2SeqForConditionalGeneration,
    FourfoldSeq2SeqForSequenceClassification,
    FourfoldSeq2SeqModel,
)

ConfigTester = hf_common.test_configuration_common.ConfigTester
ModelTesterMixin = hf_common.test_modeling_common.ModelTesterMixin
GenerationTesterMixin = hf_common.test_modeling_common.GenerationTesterMixin

# transformers' common tests pick each head's labels by looking its class name up in these tables.
MAPPING_NAMES = {
    "MODEL_MAPPING_NAMES": {
        "fourfold-encoder": "FourfoldEncoderModel",
        "fourfold-decoder": "FourfoldDecoderModel",
        "fourfold-prefix-lm": "FourfoldPrefixLMModel",
        "fourfold-seq2seq": "FourfoldSeq2SeqModel",
        # not a model type: listed so the common tests treat this headless model (no loss) as a base model
        "fourfold-seq2seq-encoder": "FourfoldSeq2SeqEncoderModel",
    },
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES": {"fourfold-encoder": "FourfoldEncoderForMaskedLM"},
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES": {
        "fourfold-decoder": "FourfoldDecoderForCausalLM",
        "fourfold-prefix-lm": "FourfoldPrefixLMForCausalLM",
    },
    "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES": {"fourfold-seq2seq": "FourfoldSeq2SeqForConditionalGeneration"},
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": {
        "fourfold-encoder": "FourfoldEncoderForSequenceClassification",
        "fourfold-decoder": "FourfoldDecoderForSequenceClassification",
        "fourfold-prefix-lm": "FourfoldPrefixLMForSequenceClassification",
        "fourfold-seq2seq": "FourfoldSeq2SeqForSequenceClassification",
    },
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": {
        "fourfold-encoder": "FourfoldEncoderForTokenClassification",
        "fourfold-decoder": "FourfoldDecoderForTokenClassification",
    },
    "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES": {"fourfold-encoder": "FourfoldEncoderForQuestionAnswering"},
    "MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES": {"fourfold-encoder": "FourfoldEncoderForMultipleChoice"},
    "MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES": {"fourfold-seq2seq": "FourfoldSeq2SeqEncoderModel"},
}


def skip(reason: str, *names: str):
    """Class decorator: skip the named common tests, and the `parameterized` variants named `<name>_<i>_<case>`."""

    def decorate(cls):
        for attribute in dir(cls):
            if any(attribute == name or attribute.startswith(f"{name}_") for name in names):
                setattr(cls, attribute, unittest.skip(reason)(getattr(cls, attribute)))
        return cls

    return decorate


LEARNED_POSITIONS = "this tester's config uses learned absolute positions; RoPE scaling runs on the decoder/prefix-LM"


@pytest.fixture(scope="module", autouse=True)
def _fourfold_in_mapping_names():
    with registered_names(MAPPING_NAMES):
        yield


class FourfoldCommonTest(ModelTesterMixin):
    """What every fourfold model type shares: the tester, the config test, and the skips that apply to all."""

    config_class = None
    decoder_inputs = False
    encoder_only = False

    def setUp(self):
        self.model_tester = FourfoldModelTester(
            self, self.config_class, decoder_inputs=self.decoder_inputs, encoder_only=self.encoder_only
        )
        # hidden_size=37, transformers' usual, fails our check that the heads divide the width
        self.config_tester = ConfigTester(self, config_class=self.config_class, hidden_size=48)

    def test_config(self):
        self.config_tester.run_common_tests()


@skip(LEARNED_POSITIONS, "test_model_rope_scaling_from_config")
class FourfoldEncoderTest(FourfoldCommonTest, unittest.TestCase):
    config_class = FourfoldEncoderConfig
    all_model_classes = (
        FourfoldEncoderModel,
        FourfoldEncoderForMaskedLM,
        FourfoldEncoderForSequenceClassification,
        FourfoldEncoderForTokenClassification,
        FourfoldEncoderForQuestionAnswering,
        FourfoldEncoderForMultipleChoice,
    )


class FourfoldDecoderTest(FourfoldCommonTest, GenerationTesterMixin, unittest.TestCase):
    config_class = FourfoldDecoderConfig
    all_model_classes = (
        FourfoldDecoderModel,
        FourfoldDecoderForCausalLM,
        FourfoldDecoderForSequenceClassification,
        FourfoldDecoderForTokenClassification,
    )


class FourfoldPrefixLMTest(FourfoldCommonTest, GenerationTesterMixin, unittest.TestCase):
    config_class = FourfoldPrefixLMConfig
    all_model_classes = (FourfoldPrefixLMModel, FourfoldPrefixLMForCausalLM, FourfoldPrefixLMForSequenceClassification)


@skip(LEARNED_POSITIONS, "test_model_rope_scaling_from_config")
@skip(
    "fourfold-seq2seq always shares one embedding between encoder, decoder and LM head (the config refuses "
    "tie_word_embeddings=False)",
    "test_load_save_without_tied_weights",
)
class FourfoldSeq2SeqTest(FourfoldCommonTest, GenerationTesterMixin, unittest.TestCase):
    config_class = FourfoldSeq2SeqConfig
    decoder_inputs = True
    is_encoder_decoder = True
    all_model_classes = (FourfoldSeq2SeqModel, FourfoldSeq2SeqForConditionalGeneration)


@skip(LEARNED_POSITIONS, "test_model_rope_scaling_from_config")
@skip(
    "fourfold-seq2seq always shares one embedding between encoder, decoder and LM head (the config refuses "
    "tie_word_embeddings=False)",
    "test_load_save_without_tied_weights",
)
@skip(
    "it reloads the checkpoint with AutoModel, which for fourfold-seq2seq is the encoder-decoder "
    "FourfoldSeq2SeqModel, not a class of this encoder-only tester (it runs for the other three model types)",
    "test_load_with_mismatched_shapes",
)
class FourfoldSeq2SeqEncoderOnlyTest(FourfoldCommonTest, unittest.TestCase):
    """The seq2seq classes that run only the encoder, as transformers tests T5EncoderModel apart from T5Model."""

    config_class = FourfoldSeq2SeqConfig
    encoder_only = True
    all_model_classes = (FourfoldSeq2SeqEncoderModel, FourfoldSeq2SeqForSequenceClassification)
