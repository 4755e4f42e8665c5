# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Glue between the shipped model code and the libraries around it.

Decoder conversion (`conversion`), batched inference (`inference`), PEFT defaults (`peft`), the Hub and model cards
(`hub`, `model_card`). These modules may import `gemma_encoder_hf.modeling`; the modeling code never imports them.
"""
