# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""gemma-encoder-hf: Gemma 1/2/3 decoders as bidirectional encoders, as a registered transformers model family.

Importing the package registers the GemmaEncoder classes with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from .configuration_gemma_encoder import GemmaEncoderConfig
from .conversion import PAIR_TEMPLATE_DOC, convert, from_decoder, prepare_tokenizer
from .hub import push_to_hub
from .inference import embed, score_pairs
from .integrations import register_peft_target_modules
from .modeling_gemma_encoder import (
    GemmaEncoderForMaskedLM,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderModel,
    GemmaEncoderPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register(GemmaEncoderConfig.model_type, GemmaEncoderConfig, exist_ok=True)
AutoModel.register(GemmaEncoderConfig, GemmaEncoderModel, exist_ok=True)
AutoModelForSequenceClassification.register(GemmaEncoderConfig, GemmaEncoderForSequenceClassification, exist_ok=True)
AutoModelForMaskedLM.register(GemmaEncoderConfig, GemmaEncoderForMaskedLM, exist_ok=True)

# `from_decoder` reads GGUF files and decoder configs, which the self-contained modeling file (shipped to the Hub for
# trust_remote_code) must not depend on; the package attaches it here instead.
GemmaEncoderPreTrainedModel.from_decoder = classmethod(from_decoder)

# transformers' push_to_hub uploads the model alone with a generic card; ours adds the tokenizer and a generated card in
# the same commit. It needs the card generator, so it is attached here, like `from_decoder`.
GemmaEncoderPreTrainedModel.push_to_hub = push_to_hub

# PEFT's LoraConfig (and other adapter methods) then need no `target_modules` for GemmaEncoder models.
register_peft_target_modules()

__all__ = [
    "GemmaEncoderConfig",
    "GemmaEncoderModel",
    "GemmaEncoderForSequenceClassification",
    "GemmaEncoderForRanking",
    "GemmaEncoderForMaskedLM",
    "GemmaEncoderPreTrainedModel",
    "PAIR_TEMPLATE_DOC",
    "convert",
    "embed",
    "prepare_tokenizer",
    "score_pairs",
]
