# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""The embedding model format: a GemmaEncoder folder that sentence-transformers loads as an EmbeddingGemma-style model.

Owns: building a `SentenceTransformer` around a GemmaEncoder (its own pooling, then optional `Dense` projections and
`Normalize`, as EmbeddingGemma's `0_Transformer / 1_Pooling / 2_Dense / 3_Dense / 4_Normalize` layout, with the
pooling inside the model), the named prompts `query` / `document` that sentence-transformers' `encode_query` /
`encode_document` apply, Matryoshka truncation (`truncate_dim`), and reading that format back for
`gemma_encoder_hf.embed`, so that `embed(..., prompt_name="query")` gives the vectors `SentenceTransformer(folder)`
gives.

Layout of a saved folder (everything `SentenceTransformer.save` writes):

    config.json, model.safetensors, tokenizer files      the GemmaEncoderModel (pooling = config.pooling)
    modules.json, sentence_bert_config.json              module 0: the model's `pooler_output`
    1_Dense/, 2_Dense/ ...                                optional projections (no bias, no activation)
    N_Normalize/                                          optional L2 normalisation
    config_sentence_transformers.json                    prompts, similarity function, truncate_dim

sentence-transformers itself is imported only where a model is built or a folder lists projection modules: plain
`embed` on a plain encoder does not need it.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..modeling.modeling_gemma_encoder import SENTENCE_TRANSFORMERS_MODULE_CONFIG

# EmbeddingGemma's retrieval prompts (its model card): the query names the task, the document names its title.
DEFAULT_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}

ST_CONFIG_FILE = "config_sentence_transformers.json"
# sentence-transformers module types `embed` applies after pooling (by class name; saved as their import path).
_POST_POOLING_MODULES = ("Dense", "Normalize")


def build_sentence_transformer(
    encoder_dir: str | os.PathLike,
    *,
    projection_dims: Sequence[int] = (),
    normalize: bool = True,
    prompts: Mapping[str, str] | None = None,
    truncate_dim: int | None = None,
    device: str | None = None,
    **config_overrides,
):
    """A `SentenceTransformer` whose first module is the GemmaEncoder saved in `encoder_dir`, returning its pooled
    vector, followed by optional projections and an L2 normalisation.

    Args:
        encoder_dir: a folder holding any GemmaEncoder (base, masked-LM adapted, classifier: the backbone is used)
            and its tokenizer.
        projection_dims: output sizes of bias-free linear projections applied in turn after pooling, e.g.
            `(3072, 768)` for EmbeddingGemma's up-and-down projection. New projections start from PyTorch's default
            initialisation and are meant to be trained (`train_embeddings`).
        normalize: end with a `Normalize` module: vectors have unit length, so cosine similarity is a dot product.
        prompts: named prompts, prepended to the text by `encode(prompt_name=...)`; `encode_query` /
            `encode_document` use `query` / `document`. `None`: EmbeddingGemma's retrieval prompts
            (`DEFAULT_PROMPTS`); `{}`: none.
        truncate_dim: keep only the first dimensions of every vector (Matryoshka); saved with the model.
        device: where the model runs (sentence-transformers' default when None).
        config_overrides: `GemmaEncoderConfig` fields for the encoder, e.g. `pooling="mean"`.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer

    # A copy: the module keeps (and may edit) its modality_config.
    module_config = copy.deepcopy(SENTENCE_TRANSFORMERS_MODULE_CONFIG)
    transformer = Transformer(str(encoder_dir), config_kwargs=config_overrides, **module_config)
    if transformer.auto_model.config.model_type != "gemma_encoder":
        raise ValueError(
            f"{encoder_dir} holds a {transformer.auto_model.config.model_type!r} model, not a GemmaEncoder; convert "
            "a decoder first (`gemma-encoder convert SOURCE DIR`)."
        )
    modules = [transformer]
    width = transformer.auto_model.config.hidden_size
    for dim in projection_dims:
        if dim < 1:
            raise ValueError(f"projection_dims must be positive sizes, got {list(projection_dims)}.")
        modules.append(Dense(width, dim, bias=False, activation_function=None))
        width = dim
    if normalize:
        modules.append(Normalize())
    check_truncate_dim(truncate_dim, width)
    return SentenceTransformer(
        modules=modules,
        prompts=dict(DEFAULT_PROMPTS if prompts is None else prompts),
        truncate_dim=truncate_dim,
        similarity_fn_name="cosine",
        device=device,
    )


def check_truncate_dim(truncate_dim: int | None, width: int) -> None:
    if truncate_dim is not None and not 0 < truncate_dim <= width:
        raise ValueError(f"truncate_dim={truncate_dim} must be between 1 and the embedding size {width}.")


def is_embedding_folder(path: str | os.PathLike) -> bool:
    """Whether `path` was saved as an embedding model (by `SentenceTransformer.save`, e.g. `train_embeddings`)."""
    return (Path(path) / ST_CONFIG_FILE).is_file() and (Path(path) / "modules.json").is_file()


@dataclass
class EmbeddingFormat:
    """What a saved embedding model adds to the encoder's pooled vector: prompts, projections, truncation.

    `gemma_encoder_hf.embed` reads it from the folder a model was loaded from (`model.name_or_path`), so that
    `embed(GemmaEncoderModel.from_pretrained(folder), ...)` and `SentenceTransformer(folder).encode(...)` agree.
    """

    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    modules: list[torch.nn.Module] = field(default_factory=list)
    truncate_dim: int | None = None
    source: str | None = None

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> EmbeddingFormat:
        folder = Path(folder)
        config = json.loads((folder / ST_CONFIG_FILE).read_text())
        modules = []
        for entry in sorted(json.loads((folder / "modules.json").read_text()), key=lambda e: e["idx"])[1:]:
            kind = entry["type"].rsplit(".", 1)[-1]
            if kind not in _POST_POOLING_MODULES:
                raise ValueError(
                    f"{folder} has a {entry['type']} module after the encoder; gemma_encoder_hf.embed applies only "
                    f"{' and '.join(_POST_POOLING_MODULES)} modules. Encode with SentenceTransformer({str(folder)!r})."
                )
            from sentence_transformers.util import import_from_string

            modules.append(import_from_string(entry["type"]).load(str(folder / entry["path"])))
        return cls(
            prompts=dict(config.get("prompts") or {}),
            default_prompt_name=config.get("default_prompt_name"),
            modules=modules,
            truncate_dim=config.get("truncate_dim"),
            source=str(folder),
        )

    @classmethod
    def of_model(cls, model: torch.nn.Module) -> EmbeddingFormat:
        """The format of the folder `model` was loaded from; an empty one (no prompts, no modules) otherwise."""
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
        return cls.from_folder(name) if name and is_embedding_folder(name) else cls()

    def resolve_prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        """The text to prepend, by sentence-transformers' rules: an explicit `prompt` wins over `prompt_name`, and
        without either the saved `default_prompt_name` applies."""
        if prompt is not None:
            return prompt
        if prompt_name is None:
            prompt_name = self.default_prompt_name
            if prompt_name is None:
                return ""
        if prompt_name not in self.prompts:
            where = f"the prompts saved in {self.source}" if self.source else "no saved prompts (not an embedding folder)"
            raise ValueError(
                f"prompt_name={prompt_name!r} is not one of {sorted(self.prompts)} ({where}); pass the text itself "
                "with prompt=..., or save the model with prompts (build_sentence_transformer(prompts=...))."
            )
        return self.prompts[prompt_name]

    def apply(self, pooled: torch.Tensor, truncate_dim: int | None = None) -> torch.Tensor:
        """Run the pooled vectors through the saved modules, then truncate, as `SentenceTransformer.encode` does."""
        features = {"sentence_embedding": pooled}
        with torch.inference_mode():
            for module in self.modules:
                module.to(pooled.device)
                features = module(features)
        embeddings = features["sentence_embedding"]
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        check_truncate_dim(truncate_dim, embeddings.shape[-1])
        return embeddings[..., :truncate_dim] if truncate_dim is not None else embeddings


__all__ = [
    "DEFAULT_PROMPTS",
    "EmbeddingFormat",
    "build_sentence_transformer",
    "is_embedding_folder",
]
