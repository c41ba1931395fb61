"""fourfold's models: the code that travels to the Hub with every checkpoint.

The sibling modules here import only torch, transformers and the standard library, and each other only as
`from .x import Y`, so `save_pretrained` can copy them next to the weights. This `__init__` does not travel.
"""

from .configuration_fourfold import (
    FourfoldConfig,
    FourfoldDecoderConfig,
    FourfoldEncoderConfig,
    FourfoldPrefixLMConfig,
    FourfoldSeq2SeqConfig,
)
from .heads import (
    FourfoldDecoderForCausalLM,
    FourfoldDecoderForSequenceClassification,
    FourfoldDecoderForTokenClassification,
    FourfoldEncoderForMaskedLM,
    FourfoldEncoderForMultipleChoice,
    FourfoldEncoderForQuestionAnswering,
    FourfoldEncoderForSequenceClassification,
    FourfoldEncoderForTokenClassification,
    FourfoldPrefixLMForCausalLM,
    FourfoldPrefixLMForSequenceClassification,
    FourfoldSeq2SeqEncoderModel,
    FourfoldSeq2SeqForConditionalGeneration,
    FourfoldSeq2SeqForSequenceClassification,
)
from .modeling_fourfold import (
    AUTO_MAP,
    FourfoldDecoderModel,
    FourfoldEncoderModel,
    FourfoldPrefixLMModel,
    FourfoldPreTrainedModel,
    FourfoldSeq2SeqModel,
    FourfoldStack,
)

CONFIG_CLASSES = {
    config.model_type: config
    for config in (FourfoldEncoderConfig, FourfoldDecoderConfig, FourfoldPrefixLMConfig, FourfoldSeq2SeqConfig)
}

__all__ = [
    "AUTO_MAP",
    "CONFIG_CLASSES",
    "FourfoldConfig",
    "FourfoldDecoderConfig",
    "FourfoldDecoderForCausalLM",
    "FourfoldDecoderForSequenceClassification",
    "FourfoldDecoderForTokenClassification",
    "FourfoldDecoderModel",
    "FourfoldEncoderConfig",
    "FourfoldEncoderForMaskedLM",
    "FourfoldEncoderForMultipleChoice",
    "FourfoldEncoderForQuestionAnswering",
    "FourfoldEncoderForSequenceClassification",
    "FourfoldEncoderForTokenClassification",
    "FourfoldEncoderModel",
    "FourfoldPreTrainedModel",
    "FourfoldPrefixLMConfig",
    "FourfoldPrefixLMForCausalLM",
    "FourfoldPrefixLMForSequenceClassification",
    "FourfoldPrefixLMModel",
    "FourfoldSeq2SeqConfig",
    "FourfoldSeq2SeqEncoderModel",
    "FourfoldSeq2SeqForConditionalGeneration",
    "FourfoldSeq2SeqForSequenceClassification",
    "FourfoldSeq2SeqModel",
    "FourfoldStack",
]
