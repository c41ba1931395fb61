"""fourfold: the four classic Transformer configurations as first-class transformers models.

`import fourfold` registers every config and model class with transformers' Auto classes, so
`AutoModelForCausalLM.from_pretrained(folder)` works on any fourfold checkpoint without `trust_remote_code`.
Subpackages: `fourfold.modeling` (the models; Hub-portable), `fourfold.configuration` (named sizes and recipes),
`fourfold.training` (pretraining, fine-tuning and the command line).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTextEncoding,
    AutoModelForTokenClassification,
)

from . import modeling
from .modeling import *  # noqa: F403
from .modeling.compat import FOURFOLD_VERSION

__version__ = FOURFOLD_VERSION  # written once, in the Hub code (modeling/compat.py); setup.cfg reads it there

_AUTO_CLASSES = {
    "AutoModel": AutoModel,
    "AutoModelForCausalLM": AutoModelForCausalLM,
    "AutoModelForMaskedLM": AutoModelForMaskedLM,
    "AutoModelForMultipleChoice": AutoModelForMultipleChoice,
    "AutoModelForQuestionAnswering": AutoModelForQuestionAnswering,
    "AutoModelForSeq2SeqLM": AutoModelForSeq2SeqLM,
    "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
    "AutoModelForTextEncoding": AutoModelForTextEncoding,
    "AutoModelForTokenClassification": AutoModelForTokenClassification,
}


def _register() -> None:
    """Register each model type's config and classes, following the same table that goes into saved auto_maps."""
    for model_type, auto_map in modeling.AUTO_MAP.items():
        config_class = modeling.CONFIG_CLASSES[model_type]
        AutoConfig.register(model_type, config_class, exist_ok=True)
        for auto_name, target in auto_map.items():
            if auto_name != "AutoConfig":
                model_class = getattr(modeling, target.split(".")[-1])
                _AUTO_CLASSES[auto_name].register(config_class, model_class, exist_ok=True)


_register()

# PEFT's default target modules for the four model types (`LoraConfig()` without target_modules works anywhere).
try:
    import peft  # noqa: F401  (a fourfold dependency; the Hub code registers only if it is already imported)
except ImportError:
    pass
modeling.modeling_fourfold.register_peft_defaults()

# The pipelines transformers 5 dropped (text2text generation, extractive QA), under fourfold's own task names.
from .modeling.pipelines import register_pipelines  # noqa: E402

register_pipelines()
