# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""The model code that ships to Hub repositories.

The two files here travel verbatim next to the weights of every saved model (transformers copies them for
`trust_remote_code`), so they import only torch, transformers and each other: never the rest of this package.
"""

from .configuration_gemma_encoder import GemmaEncoderConfig
from .modeling_gemma_encoder import (
    GemmaEncoderForMaskedLM,
    GemmaEncoderForQuestionAnswering,
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
    GemmaEncoderForTokenClassification,
    GemmaEncoderModel,
    GemmaEncoderPreTrainedModel,
)

__all__ = [
    "GemmaEncoderConfig",
    "GemmaEncoderForMaskedLM",
    "GemmaEncoderForQuestionAnswering",
    "GemmaEncoderForRanking",
    "GemmaEncoderForSequenceClassification",
    "GemmaEncoderForTokenClassification",
    "GemmaEncoderModel",
    "GemmaEncoderPreTrainedModel",
]
