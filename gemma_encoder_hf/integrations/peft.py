# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Glue with optional libraries, applied on `import gemma_encoder_hf`.

Owns: PEFT's default target modules for `model_type="gemma_encoder"`. (sentence-transformers needs no glue: a saved
`GemmaEncoderModel` folder carries its own `modules.json`, written by the modeling file's `save_pretrained`.)
"""

import importlib.util

from ..modeling.configuration_gemma_encoder import GemmaEncoderConfig


def register_peft_target_modules() -> None:
    """Let PEFT pick default `target_modules` for GemmaEncoder models, as it does for Gemma decoders.

    PEFT looks up `config.model_type` in one `TRANSFORMERS_MODELS_TO_<METHOD>_..._MODULES_MAPPING` dict per adapter
    method (LoRA, AdaLoRA, IA3, VeRA, ...); the tuner classes hold references to these dicts, so adding a key here is
    seen by `get_peft_model`. GemmaEncoder keeps the decoders' module names, so each method gets the entry it already
    uses for Gemma 3 (LoRA: `q_proj`, `v_proj`, plus the recurrent blocks' `linear_x`, `linear_y`, which only
    RecurrentGemma-derived encoders have). With `task_type="SEQ_CLS"` the head `score` (poolers included, whose
    projections are also called `q_proj`/`v_proj`) is trained and saved whole through `modules_to_save`, and PEFT
    never puts an adapter inside a `modules_to_save` module, so the adapters land on the backbone only.

    Does nothing when PEFT is not installed; an entry the user (or a later PEFT release) already set is kept.
    """
    if importlib.util.find_spec("peft") is None:
        return
    from peft.utils import constants

    for name, mapping in vars(constants).items():
        if name.startswith("TRANSFORMERS_MODELS_TO_") and name.endswith("_MODULES_MAPPING"):
            if isinstance(mapping, dict) and "gemma3_text" in mapping:
                default = list(mapping["gemma3_text"])
                if name == "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING":
                    # Encoders converted from RecurrentGemma have attention in one layer of three; the recurrent
                    # blocks' input projections (recurrence and gate branches) take q/v's part in the others.
                    default += ["linear_x", "linear_y"]
                mapping.setdefault(GemmaEncoderConfig.model_type, default)


__all__ = ["register_peft_target_modules"]
