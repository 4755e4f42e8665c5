# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Configuration of the GemmaEncoder family.

This file is shipped verbatim to Hub repositories for `trust_remote_code`: it imports only torch/transformers.
"""

import dataclasses
import difflib

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

ATTENTION_TYPES = ("bidirectional", "causal")
BIDIRECTIONAL_WINDOWS = ("split", "full", "global", "native")
POOLING_TYPES = ("mean", "first", "last", "attention")
ATTENTION_POOLING_PROBES = ("query", "kv")
RANKING_LOSSES = ("pointwise", "pairwise", "listwise")
MASKED_LM_OBJECTIVES = ("mntp", "mlm")
PACKED_EXECUTION_MODES = ("auto", "always", "never")
LAYER_TYPES = ("full_attention", "sliding_attention", "linear_attention")
RECURRENCE_COMBINES = ("mean", "sum", "gate")
RECURRENCE_REVERSE_WEIGHTS = ("tied", "separate")


def _check_choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"GemmaEncoderConfig.{name}={value!r} is not supported; allowed values: {list(allowed)}.")


def _check_range(name: str, value, low: float, high: float | None = None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"GemmaEncoderConfig.{name} must be a number, got {value!r}.")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"GemmaEncoderConfig.{name}={value!r} is out of range; it must be {bound}.")


# A keyword at least this similar to a field name (difflib ratio) is taken for a misspelling of it: "poolng" ->
# "pooling" is 0.92, "atention" -> "attention" 0.94, "num_hidden_layer" 0.97. Keys that other configs legitimately
# carry stay below it: "norm_eps" -> "rms_norm_eps" 0.80 (transformers' own tests set it on every config),
# "rope_scaling" -> "rope_scaling_factor" 0.77, "sliding_window_pattern" -> "sliding_window" 0.78.
MISSPELLING_CUTOFF = 0.85


def _refuse_misspelt_fields(config_class: type, kwargs: dict) -> None:
    """Raise on keyword arguments that are no field of the config but a near-miss of one of its own fields.

    Other unknown keys stay accepted and stored, as `PreTrainedConfig` does: saved configs and transformers itself
    pass many (`architectures`, `auto_map`, `_name_or_path`, `torch_dtype`, `num_labels`, generation defaults, ...).
    Attributes `PreTrainedConfig` knows are never taken for misspellings.
    """
    own = [f.name for f in dataclasses.fields(config_class) if not hasattr(PreTrainedConfig, f.name)]
    for key in kwargs:
        if hasattr(PreTrainedConfig, key) or key.startswith("_"):
            continue
        close = difflib.get_close_matches(key, own, n=1, cutoff=MISSPELLING_CUTOFF)
        if close:
            raise TypeError(
                f"{config_class.__name__} got an unknown argument {key!r}; did you mean {close[0]!r}? (A misspelt "
                f"field would be stored as a new key and leave {close[0]!r} at its default.)"
            )


class GemmaEncoderConfig(PreTrainedConfig):
    r"""
    Configuration of a bidirectional encoder built from a Gemma 1, 2, 3 or 4 (text) decoder, from the encoder of a
    T5Gemma / T5Gemma 2 checkpoint, from an EmbeddingGemma 2 text tower, or from a RecurrentGemma decoder.

    The backbone fields express every generation with one layer implementation; `from_decoder` fills them from
    the decoder's own config, so users normally only set the encoder knobs. Defaults describe Gemma 3 270M.

    Backbone (copied from the decoder):
        vocab_size (`int`): size of the token vocabulary.
        hidden_size (`int`): width of the residual stream.
        intermediate_size (`int`): width of the gated feed-forward layer.
        num_hidden_layers (`int`): number of transformer layers.
        num_attention_heads (`int`): number of query heads.
        num_key_value_heads (`int`): number of key/value heads (grouped-query attention when smaller).
        head_dim (`int`): width of one attention head.
        hidden_activation (`str`): activation of the gated feed-forward layer (Gemma uses `"gelu_pytorch_tanh"`).
        max_position_embeddings (`int`): longest sequence the rotary embeddings were trained for; longer inputs
            should be truncated by the tokenizer.
        rms_norm_eps (`float`): epsilon of the RMS norms.
        initializer_range (`float`): std of the normal init of newly created (head, pooler) weights.
        attention_bias (`bool`): whether q/k/v/o projections carry a bias (False for every Gemma).
        query_pre_attn_scalar (`float`): attention logits are scaled by `query_pre_attn_scalar ** -0.5`
            (Gemma 1 uses `head_dim`).
        attn_logit_softcapping (`float`, *optional*): tanh soft-capping of attention logits (Gemma 2).
        final_logit_softcapping (`float`, *optional*): tanh soft-capping of vocabulary logits (masked-LM head only).
        use_sandwich_norms (`bool`): Gemma 2/3 normalise both before and after attention and feed-forward; Gemma 1
            only before. With `False` the weight named `post_attention_layernorm` is the pre-feed-forward norm, as
            in Gemma 1 checkpoints.
        use_qk_norm (`bool`): RMS-normalise queries and keys per head (Gemma 3).
        sliding_window (`int`, *optional*): the decoder's causal window: a query on a sliding layer saw itself and
            the `sliding_window - 1` tokens before it.
        layer_types (`list[str]`, *optional*): `"full_attention"`, `"sliding_attention"` or `"linear_attention"` (a
            RecurrentGemma / Griffin recurrent block in place of attention) per layer; all full attention when
            omitted.
        rope_theta (`float`): RoPE base of full-attention layers.
        rope_local_base_freq (`float`, *optional*): RoPE base of sliding layers (Gemma 3); `rope_theta` when unset.
        rope_scaling_factor (`float`): linear RoPE position scaling of full-attention layers (Gemma 3 4B and larger
            use 8.0); 1.0 means none.
        pad_token_id, bos_token_id, eos_token_id (`int`): special token ids of the Gemma tokenizer.
        tie_word_embeddings (`bool`): the masked-LM head reuses the input embedding, as Gemma's LM head does.
        decoder_model_type (`str`, *optional*): model_type of the checkpoint this encoder was converted from
            (`"gemma"`, `"gemma2"`, `"gemma3_text"`, `"gemma4_text"`, `"t5gemma"`, `"t5gemma2"`,
            `"embedding_gemma2_text"`, `"recurrent_gemma"`); informational, used by model cards.
        native_bidirectional_window (`list[int]`, *optional*): `[left, right]`: how many tokens before and after
            itself a query on a sliding layer sees when the checkpoint is an encoder trained bidirectionally with its
            own window (T5Gemma: `[sliding_window, sliding_window]`; T5Gemma 2: `[(sliding_window + 1) // 2 - 1,
            sliding_window // 2]`, as transformers' encoders mask them; EmbeddingGemma 2: its radius on both sides).
            Used when `bidirectional_window="native"`.
        rms_norm_unit_offset (`bool`): Gemma 1-3 RMS norms scale by `1 + weight` (zero weights are the identity);
            Gemma 4's scale by `weight` itself.
        global_head_dim (`int`, *optional*): head width of full-attention layers when it differs from `head_dim`
            (Gemma 4).
        num_global_key_value_heads (`int`, *optional*): key/value heads of full-attention layers when they differ from
            `num_key_value_heads` (Gemma 4 models with `attention_k_eq_v`).
        attention_k_eq_v (`bool`): full-attention layers have no `v_proj`: the key projection doubles as the value
            projection (values are taken before the key norm and RoPE) (Gemma 4).
        use_value_norm (`bool`): RMS-normalise values per head, without a learned scale (Gemma 4).
        num_kv_shared_layers (`int`): the last `num_kv_shared_layers` layers compute no keys or values of their own:
            each reuses those of the last earlier layer of its type (Gemma 4).
        use_double_wide_mlp (`bool`): the key/value-sharing layers have feed-forward layers twice
            `intermediate_size` wide (Gemma 4).
        rope_partial_rotary_factor (`float`): share of the head dimensions full-attention layers rotate ("proportional"
            RoPE: the frequencies of the other dimensions are zero, so those dimensions carry no position) (Gemma 4
            uses 0.25); 1.0 rotates them all.
        hidden_size_per_layer_input (`int`): width of the per-layer input embeddings (PLE) each layer adds through a
            gated projection after its feed-forward block (Gemma 4 E2B/E4B, EmbeddingGemma 2); 0 for none.
        vocab_size_per_layer_input (`int`, *optional*): vocabulary of the per-layer input embedding table. Gemma 4
            adds a token's row of that table to a projection of its main embedding; None with PLE is EmbeddingGemma
            2's *projection-only* PLE: the per-layer inputs are the (normalised) projection alone, so they can also be
            computed from `inputs_embeds`.
        use_layer_scalar (`bool`): each layer multiplies its output by a stored scalar `layer_scalar` (Gemma 4).
        num_experts (`int`): experts of the mixture-of-experts feed-forward block every layer runs beside its dense
            MLP (Gemma 4 MoE models); 0 for none.
        top_k_experts (`int`, *optional*): experts each token is routed to; needed with `num_experts`.
        moe_intermediate_size (`int`, *optional*): hidden width of each expert; needed with `num_experts`.
        embedding_scale (`float`, *optional*): multiplier of the token embeddings; `hidden_size ** 0.5` when unset
            (RecurrentGemma stores it rounded to bfloat16).
        mlp_bias (`bool`): the feed-forward projections carry biases (RecurrentGemma).
        attention_output_bias (`bool`): the attention output projection carries a bias even without
            `attention_bias` (RecurrentGemma).
        rope_rotary_dim (`int`, *optional*): rotate only the first `rope_rotary_dim` dimensions of each head, as a
            rotary embedding of that width (pairs i and i + rope_rotary_dim / 2), and pass the others unrotated
            (RecurrentGemma: head_dim / 2); every dimension when unset.
        lru_width (`int`, *optional*): width of the recurrent blocks (RecurrentGemma's RG-LRU); needed when
            `layer_types` holds `"linear_attention"` layers.
        conv1d_width (`int`): width of the recurrent blocks' depthwise temporal convolution.
        eoi_token_index (`int`, *optional*): T5Gemma 2's end-of-image token, whose input embedding is the separate,
            unscaled vector `embed_tokens.eoi_embedding` instead of its row of the embedding matrix; None for
            checkpoints without one.

    Encoder knobs:
        attention (`str`): `"bidirectional"` (default): every token sees every other token; `"causal"`: the decoder's
            own mask, which reproduces the decoder's hidden states exactly.
        bidirectional_layers (`int`, *optional*): with `attention="bidirectional"`, only the top this many layers
            attend (and recur) in both directions; the layers below keep the decoder's causal mask, so their states
            stay the ones the decoder was pretrained to produce (BeLLM, Li & Li 2024, turns only the last layers
            bidirectional). None (default): every layer.
        bidirectional_window (`str`): how sliding-window layers look in bidirectional mode. `"split"` (default): a
            token sees `sliding_window // 2` tokens on each side, the same span as the decoder's causal window and
            the same mask as transformers' Gemma 3 `use_bidirectional_attention=True`; `"full"`: `sliding_window - 1`
            tokens on each side; `"global"`: sliding layers attend to the whole sequence; `"native"`: the window a
            bidirectional encoder checkpoint was trained with (`native_bidirectional_window`; the default of encoders
            converted from T5Gemma / T5Gemma 2).
        recurrence_combine (`str`): how a bidirectional recurrent block joins its two directions (the recurrence over
            the text and over the reversed text, each with its own causal convolution, so the block's convolution
            spans `conv1d_width - 1` tokens on each side): `"mean"` (default: keeps the scale the decoder's block was
            trained with), `"sum"`, or `"gate"` (a learned per-channel mix sigmoid(g) * forward + (1 - sigmoid(g)) *
            backward, starting at the mean). Causal attention runs the forward direction only.
        recurrence_reverse_weights (`str`): `"tied"` (default): the reverse direction reuses the forward direction's
            convolution and RG-LRU weights (as Caduceus' BiMamba ties its two directions); `"separate"`: it has its
            own, initialised from the forward ones at conversion.
        pooling (`str`): how token states become one vector: `"mean"` over real tokens (default), `"first"` (mean of
            the first `pooling_k` real tokens), `"last"` (mean of the last `pooling_k` real tokens), or `"attention"`
            (learned attention pooling, see `attention_pooling_probe`).
        pooling_k (`int`): K of first-K / last-K pooling.
        attention_pooling_probe (`str`): `"query"`: learned query probes attend over the token states (the probes'
            outputs are averaged); `"kv"`: each token attends over learned key/value probes and the results are
            averaged over real tokens.
        attention_pooling_num_probes (`int`): number of learned probes.
        attention_pooling_num_heads (`int`): heads of the pooling attention; must divide `hidden_size` when
            `pooling="attention"` (other poolings ignore it).
        attention_dropout (`float`): dropout on attention probabilities (Gemma was pretrained without dropout; the
            paper adds it at fine-tuning time).
        hidden_dropout (`float`): dropout on the attention and feed-forward outputs before each residual add.
        classifier_dropout (`float`): dropout before each layer of the head. 0 by default: with a few hundred to a
            few thousand labelled examples, dropout 0.1 (attention, hidden and classifier together) cost 10-30
            accuracy points on SST-2, and every recommended recipe was measured without it (docs/results.md); the
            paper's fine-tuning dropout is meant for full-size training sets.
        classifier_hidden_size (`int`, *optional*): width of the head's hidden layer; `hidden_size` when unset, 0
            for a single linear layer.
        classifier_activation (`str`): activation of the head's hidden layer (any key of transformers' `ACT2FN`).
        ranking_loss (`str`): loss of `GemmaEncoderForRanking`: `"pointwise"` (binary cross-entropy per pair),
            `"pairwise"` (RankNet logistic loss over every better/worse pair of a group) or `"listwise"` (softmax
            cross-entropy over a group, default).
        ranking_group_size (`int`): documents per query in a ranking batch (1 positive + n negatives, the positive
            first); a batch holds whole groups. Used by the pairwise and listwise losses.
        masked_lm_objective (`str`): which hidden state `GemmaEncoderForMaskedLM` predicts token i from. `"mntp"`
            (default, masked next-token prediction as in LLM2Vec): the state at position i - 1, which is what the
            decoder's LM head was pretrained on, so a freshly converted model already fills masks sensibly;
            `"mlm"`: the state at position i itself, as BERT does. Either way `logits[:, i]` scores token i, so the
            `fill-mask` pipeline and `labels` are the same for both.
        packed_execution (`str`): whether a padded batch runs "packed": only its real tokens go through the layers
            (laid back to back, attention kept within each text), and the outputs are padded again afterwards.
            `"auto"` (default): when at least a tenth of the batch is padding (and always under
            `attn_implementation="flash_attention_2"` / `"flex_attention"`, which only run packed); `"always"`: every
            batch; `"never"`: keep the padded computation (batches flattened by the caller still run packed, since
            padded attention would mix their texts). Results agree to float rounding, and padding positions of
            `last_hidden_state` (and `hidden_states`) are zeros on either path. torch.export always traces the padded
            computation.
        num_labels / problem_type / id2label / label2id: as in every transformers classifier.

    Like every `PreTrainedConfig`, the config stores keyword arguments it does not know (saved configs carry
    `architectures`, `auto_map`, `transformers_version`, ...), except a close misspelling of one of the fields above
    (`poolng`, `atention`): that raises a `TypeError` naming the intended field, since storing it would silently leave
    the field at its default. Overrides given to `from_pretrained` are checked the same way as constructor arguments.
    """

    model_type = "gemma_encoder"
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }

    # Backbone (defaults: Gemma 3 270M)
    vocab_size: int = 262_144
    hidden_size: int = 640
    intermediate_size: int = 2048
    num_hidden_layers: int = 18
    num_attention_heads: int = 4
    num_key_value_heads: int = 1
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 32_768
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    attention_bias: bool = False
    query_pre_attn_scalar: float = 256
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    use_sandwich_norms: bool = True
    use_qk_norm: bool = True
    sliding_window: int | None = 512
    layer_types: list[str] | None = None
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float | None = 10_000.0
    rope_scaling_factor: float = 1.0
    pad_token_id: int | None = 0
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 1
    tie_word_embeddings: bool = True
    decoder_model_type: str | None = None
    native_bidirectional_window: list[int] | None = None
    eoi_token_index: int | None = None
    rms_norm_unit_offset: bool = True
    global_head_dim: int | None = None
    num_global_key_value_heads: int | None = None
    attention_k_eq_v: bool = False
    use_value_norm: bool = False
    num_kv_shared_layers: int = 0
    use_double_wide_mlp: bool = False
    rope_partial_rotary_factor: float = 1.0
    hidden_size_per_layer_input: int = 0
    vocab_size_per_layer_input: int | None = None
    use_layer_scalar: bool = False
    num_experts: int = 0
    top_k_experts: int | None = None
    moe_intermediate_size: int | None = None
    embedding_scale: float | None = None
    mlp_bias: bool = False
    attention_output_bias: bool = False
    rope_rotary_dim: int | None = None
    lru_width: int | None = None
    conv1d_width: int = 4

    # Encoder knobs
    attention: str = "bidirectional"
    bidirectional_layers: int | None = None
    bidirectional_window: str = "split"
    recurrence_combine: str = "mean"
    recurrence_reverse_weights: str = "tied"
    pooling: str = "mean"
    pooling_k: int = 1
    attention_pooling_probe: str = "query"
    attention_pooling_num_probes: int = 4
    attention_pooling_num_heads: int = 4
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    classifier_dropout: float = 0.0
    classifier_hidden_size: int | None = None
    classifier_activation: str = "gelu"
    ranking_loss: str = "listwise"
    ranking_group_size: int = 8
    masked_lm_objective: str = "mntp"
    packed_execution: str = "auto"

    def __post_init__(self, **kwargs):
        _refuse_misspelt_fields(type(self), kwargs)
        if self.layer_types is None:
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        super().__post_init__(**kwargs)
        self._validate_encoder_fields()

    def _validate_encoder_fields(self) -> None:
        _check_choice("attention", self.attention, ATTENTION_TYPES)
        _check_range("bidirectional_layers", self.bidirectional_layers, 1, self.num_hidden_layers, allow_none=True)
        if isinstance(self.bidirectional_layers, float):
            raise ValueError(f"GemmaEncoderConfig.bidirectional_layers must be a whole number of layers, got "
                             f"{self.bidirectional_layers!r}.")
        _check_choice("bidirectional_window", self.bidirectional_window, BIDIRECTIONAL_WINDOWS)
        _check_choice("pooling", self.pooling, POOLING_TYPES)
        _check_choice("attention_pooling_probe", self.attention_pooling_probe, ATTENTION_POOLING_PROBES)
        _check_choice("ranking_loss", self.ranking_loss, RANKING_LOSSES)
        _check_choice("masked_lm_objective", self.masked_lm_objective, MASKED_LM_OBJECTIVES)
        _check_choice("packed_execution", self.packed_execution, PACKED_EXECUTION_MODES)
        for i, layer_type in enumerate(self.layer_types):
            _check_choice(f"layer_types[{i}]", layer_type, LAYER_TYPES)
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(
                f"GemmaEncoderConfig.layer_types has {len(self.layer_types)} entries but num_hidden_layers="
                f"{self.num_hidden_layers}; give one entry per layer."
            )
        if "sliding_attention" in self.layer_types:
            _check_range("sliding_window", self.sliding_window, 1)
        if self.bidirectional_window == "native":
            span = self.native_bidirectional_window
            if not isinstance(span, (list, tuple)) or len(span) != 2:
                raise ValueError(
                    "GemmaEncoderConfig.bidirectional_window='native' needs native_bidirectional_window=[left, right] "
                    f"(got {span!r}); it is set when converting a T5Gemma / T5Gemma 2 encoder. Use 'split', 'full' or "
                    "'global' for other checkpoints."
                )
            for side, value in zip(("left", "right"), span):
                _check_range(f"native_bidirectional_window ({side})", value, 0)
        _check_range("num_kv_shared_layers", self.num_kv_shared_layers, 0, self.num_hidden_layers - 1)
        if self.num_kv_shared_layers:
            producers = set(self.layer_types[: self.num_hidden_layers - self.num_kv_shared_layers])
            if not set(self.layer_types) <= producers:
                raise ValueError(
                    f"GemmaEncoderConfig.num_kv_shared_layers={self.num_kv_shared_layers} leaves no earlier layer of "
                    f"each type to share keys and values from (layer_types={self.layer_types})."
                )
        _check_range("rope_partial_rotary_factor", self.rope_partial_rotary_factor, 0.0, 1.0)
        _check_range("hidden_size_per_layer_input", self.hidden_size_per_layer_input, 0)
        _check_range("vocab_size_per_layer_input", self.vocab_size_per_layer_input, 1, allow_none=True)
        _check_range("num_experts", self.num_experts, 0)
        if self.num_experts:
            if self.top_k_experts is None or self.moe_intermediate_size is None:
                raise ValueError(
                    "GemmaEncoderConfig.num_experts is set, so top_k_experts and moe_intermediate_size are needed too."
                )
            _check_range("top_k_experts", self.top_k_experts, 1, self.num_experts)
            _check_range("moe_intermediate_size", self.moe_intermediate_size, 1)
        _check_choice("recurrence_combine", self.recurrence_combine, RECURRENCE_COMBINES)
        _check_choice("recurrence_reverse_weights", self.recurrence_reverse_weights, RECURRENCE_REVERSE_WEIGHTS)
        if "linear_attention" in self.layer_types:
            _check_range("lru_width", self.lru_width, 1)
            if self.lru_width % self.num_attention_heads:
                raise ValueError(
                    f"GemmaEncoderConfig.lru_width={self.lru_width} must be a multiple of num_attention_heads="
                    f"{self.num_attention_heads}: the RG-LRU gates are block-diagonal, one block per head."
                )
            _check_range("conv1d_width", self.conv1d_width, 1)
        _check_range("rope_rotary_dim", self.rope_rotary_dim, 2, self.head_dim, allow_none=True)
        if self.rope_rotary_dim is not None and self.rope_rotary_dim % 2:
            raise ValueError(
                f"GemmaEncoderConfig.rope_rotary_dim={self.rope_rotary_dim} must be even: RoPE rotates pairs of "
                "dimensions."
            )
        _check_range("embedding_scale", self.embedding_scale, 0.0, allow_none=True)
        _check_range("pooling_k", self.pooling_k, 1)
        _check_range("attention_pooling_num_probes", self.attention_pooling_num_probes, 1)
        _check_range("attention_pooling_num_heads", self.attention_pooling_num_heads, 1)
        # Only attention pooling splits the hidden size into heads: any other pooling accepts any hidden size.
        if self.pooling == "attention" and self.hidden_size % self.attention_pooling_num_heads:
            raise ValueError(
                f"GemmaEncoderConfig.attention_pooling_num_heads={self.attention_pooling_num_heads} must divide "
                f"hidden_size={self.hidden_size} for pooling='attention'."
            )
        for name in ("attention_dropout", "hidden_dropout", "classifier_dropout"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        _check_range("classifier_hidden_size", self.classifier_hidden_size, 0, allow_none=True)
        _check_choice("classifier_activation", self.classifier_activation, tuple(sorted(ACT2FN)))
        _check_range("ranking_group_size", self.ranking_group_size, 1)
        if self.ranking_loss != "pointwise" and self.ranking_group_size < 2:
            raise ValueError(
                f"GemmaEncoderConfig.ranking_loss={self.ranking_loss!r} compares documents within a group, so "
                f"ranking_group_size must be >= 2 (got {self.ranking_group_size}); use ranking_loss='pointwise' "
                "for single documents."
            )
        _check_range("rope_scaling_factor", self.rope_scaling_factor, 1e-6)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "GemmaEncoderConfig":
        """Refuse a config of another model type. transformers only logs a warning there, and the checkpoint's weights
        would then partly load by name (`q_proj`, `mlp.up_proj`, norms) under Gemma's conventions: wrong numbers.

        Overrides (`from_pretrained(path, pooling="last")`) are checked like constructor arguments: transformers sets
        them with `setattr` after the config is built, past `__post_init__`, so `attention="sideways"` would otherwise
        load and run as bidirectional, and `poolng="last"` would reach the model's constructor as an unknown
        argument."""
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"This config has model_type {model_type!r}, not {cls.model_type!r}: it is not a GemmaEncoder "
                "checkpoint. Convert a Gemma decoder or T5Gemma encoder with GemmaEncoderModel.from_decoder(path); "
                "other architectures are not supported."
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        _refuse_misspelt_fields(cls, {key: value for key, value in kwargs.items() if key not in fields})
        loaded = super().from_dict(config_dict, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._validate_encoder_fields()
        return loaded

    def head_dim_for(self, layer_type: str) -> int:
        """Head width of the layers of `layer_type`."""
        if layer_type == "full_attention" and self.global_head_dim is not None:
            return self.global_head_dim
        return self.head_dim

    def num_key_value_heads_for(self, layer_type: str) -> int:
        """Key/value heads of the layers of `layer_type`."""
        if layer_type == "full_attention" and self.num_global_key_value_heads is not None:
            return self.num_global_key_value_heads
        return self.num_key_value_heads

    def reuses_key_values(self, layer_idx: int) -> bool:
        """Whether layer `layer_idx` takes the keys and values of an earlier layer (`num_kv_shared_layers`)."""
        return layer_idx >= self.num_hidden_layers - self.num_kv_shared_layers

    @property
    def rope_base_for(self) -> dict[str, float]:
        """RoPE base per layer type."""
        local = self.rope_local_base_freq if self.rope_local_base_freq is not None else self.rope_theta
        return {"full_attention": self.rope_theta, "sliding_attention": local}


__all__ = ["GemmaEncoderConfig"]
