# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""gemma-encoder-hf: Gemma decoders as bidirectional encoders, as a registered transformers model family.

The package has three layers, one folder each:

- `modeling/`: the model code shipped to Hub repos (torch and transformers only);
- `integrations/`: glue with the libraries around it (conversion, inference, PEFT, Hub, model cards);
- `harness/`: training, adaptation, evaluation and the `gemma-encoder` command line.

Importing the package registers the GemmaEncoder classes with transformers' Auto classes and PEFT's default target
modules.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .integrations.conversion import PAIR_TEMPLATE_DOC, convert, prepare_tokenizer
from .integrations.hub import push_to_hub
from .integrations.inference import embed, score_pairs
from .integrations.peft import register_peft_target_modules
from .integrations.pipelines import (
    ExtractiveQuestionAnsweringPipeline,
    GemmaEncoderTokenClassificationPipeline,
    register_pipelines,
)
from .modeling import (
    GemmaEncoderConfig,
    GemmaEncoderForMaskedLM,
    GemmaEncoderForQuestionAnswering,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderForTokenClassification,
    GemmaEncoderModel,
    GemmaEncoderPreTrainedModel,
)

__version__ = "0.2.0"

AutoConfig.register(GemmaEncoderConfig.model_type, GemmaEncoderConfig, exist_ok=True)
AutoModel.register(GemmaEncoderConfig, GemmaEncoderModel, exist_ok=True)
AutoModelForSequenceClassification.register(GemmaEncoderConfig, GemmaEncoderForSequenceClassification, exist_ok=True)
AutoModelForMaskedLM.register(GemmaEncoderConfig, GemmaEncoderForMaskedLM, exist_ok=True)
AutoModelForTokenClassification.register(GemmaEncoderConfig, GemmaEncoderForTokenClassification, exist_ok=True)
AutoModelForQuestionAnswering.register(GemmaEncoderConfig, GemmaEncoderForQuestionAnswering, exist_ok=True)

# PEFT's LoraConfig (and other adapter methods) then need no `target_modules` for GemmaEncoder models.
register_peft_target_modules()
# `pipeline("extractive-question-answering", model=...)`: transformers 5 removed its question-answering pipeline.
register_pipelines()

__all__ = [
    "GemmaEncoderConfig",
    "GemmaEncoderModel",
    "GemmaEncoderForSequenceClassification",
    "GemmaEncoderForRanking",
    "GemmaEncoderForMaskedLM",
    "GemmaEncoderForTokenClassification",
    "GemmaEncoderForQuestionAnswering",
    "GemmaEncoderPreTrainedModel",
    "ExtractiveQuestionAnsweringPipeline",
    "GemmaEncoderTokenClassificationPipeline",
    "PAIR_TEMPLATE_DOC",
    "convert",
    "embed",
    "prepare_tokenizer",
    "push_to_hub",
    "score_pairs",
]
