"""EmbeddingGemma-style sentence-transformers folders as conversion sources.

The EmbeddingGemma stand-in is built the way the real one is laid out: a bidirectional Gemma 3 text model at the folder
root (sentence-transformers' Transformer module), then Pooling, two Dense projections and Normalize, saved by
sentence-transformers itself. Its tokenizer is a tiny word-level one with Gemma's `<bos> text` template.
"""

import json

import pytest
import torch
from conftest import random_batch, tiny_decoder_config
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules import Transformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import Gemma3TextModel, PreTrainedTokenizerFast

from gemma_encoder_hf import GemmaEncoderModel
from gemma_encoder_hf.integrations.conversion import convert

TOLERANCE = 1e-4
# Longer than the sliding window (6) and of different lengths, so windows and padding both matter.
TEXTS = [
    "w4 w5 w6 w9 w11 w13 w17 w19 w20 w21 w22 w23 w24 w25 w26 w27 w28 w29",
    "w10 w12",
    "w50 w51 w52 w53 w54 w55 w56 w57",
]


def tiny_gemma_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, 128)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def make_embedding_gemma_folder(root, pooling_mode: str = "mean") -> tuple:
    """(sentence-transformers folder, its backbone): Gemma3TextModel(use_bidirectional_attention=True) + Pooling +
    Dense 64->96 + Dense 96->64 + Normalize, with query/document prompts, as EmbeddingGemma ships."""
    torch.manual_seed(0)
    backbone = Gemma3TextModel(tiny_decoder_config("gemma3", use_bidirectional_attention=True)).eval()
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.5)
    backbone.save_pretrained(root / "backbone")
    tiny_gemma_tokenizer().save_pretrained(root / "backbone")
    identity = torch.nn.Identity()
    st = SentenceTransformer(
        modules=[
            Transformer(str(root / "backbone")),
            Pooling(64, pooling_mode),
            Dense(64, 96, bias=False, activation_function=identity),
            Dense(96, 64, bias=False, activation_function=identity),
            Normalize(),
        ],
        prompts={"query": "w5 w6 ", "document": "w7 "},
        device="cpu",
    )
    st.save(str(root / "st"))
    return root / "st", backbone


@pytest.fixture(scope="module")
def embedding_gemma(tmp_path_factory):
    return make_embedding_gemma_folder(tmp_path_factory.mktemp("embedding_gemma"))


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_embedding_gemma_folder_gives_the_bidirectional_gemma3_states(embedding_gemma, implementation):
    """from_decoder on the sentence-transformers folder: transformers' bidirectional Gemma 3, and its Pooling."""
    folder, backbone = embedding_gemma
    model = GemmaEncoderModel.from_decoder(folder, dtype=torch.float32).eval()
    model.set_attn_implementation(implementation)
    assert (model.config.attention, model.config.pooling) == ("bidirectional", "mean")
    backbone.set_attn_implementation(implementation)
    input_ids, attention_mask = random_batch(128, batch=3, seq=20, seed=3)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    real = attention_mask.bool()
    with torch.inference_mode():
        expected = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        for packed in ("never", "always"):
            model.config.packed_execution = packed
            actual = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            assert (expected.last_hidden_state[real] - actual[real]).abs().max() <= TOLERANCE, packed


def test_converted_embedding_gemma_keeps_its_projections_and_prompts(embedding_gemma, tmp_path):
    """SentenceTransformer(converted folder) gives the original folder's embeddings, prompts included."""
    folder, _ = embedding_gemma
    out = convert(folder, tmp_path / "encoder")
    original = SentenceTransformer(str(folder), device="cpu")
    converted = SentenceTransformer(str(out), device="cpu")
    # Our model's pooled output replaces Transformer + Pooling; the Dense and Normalize modules are the source's.
    types = [entry["type"].rsplit(".", 1)[-1] for entry in json.loads((out / "modules.json").read_text())]
    assert types == ["Transformer", "Dense", "Dense", "Normalize"]
    assert converted.prompts == original.prompts
    for encode in ("encode", "encode_query", "encode_document"):
        expected = getattr(original, encode)(TEXTS, batch_size=3, convert_to_tensor=True)
        actual = getattr(converted, encode)(TEXTS, batch_size=3, convert_to_tensor=True)
        assert actual.shape == (len(TEXTS), 64)
        assert (expected - actual).abs().max() <= TOLERANCE, encode
    # Without the projections the vectors differ: the carried modules are what makes them equal.
    bare = GemmaEncoderModel.from_pretrained(out).eval()
    batch = converted.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        pooled = torch.nn.functional.normalize(bare(**batch).pooler_output, dim=-1)
    assert (pooled - converted.encode(TEXTS, convert_to_tensor=True)).abs().max() > 1e-2


def test_sentence_transformers_pooling_without_equivalent_is_refused(tmp_path):
    folder, _ = make_embedding_gemma_folder(tmp_path, pooling_mode="max")
    with pytest.raises(ValueError, match=r"pooling_mode='max'.*supported: \['mean', 'cls', 'lasttoken'\]"):
        GemmaEncoderModel.from_decoder(folder)



# ----------------------------------------------------------------------------------------------------------------------
# EmbeddingGemma 2: a transformers text tower ending in its own embedding projection
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_gemma2(tmp_path_factory):
    """(folder, model): a tiny `EmbeddingGemma2TextModel` checkpoint (model_type `embedding_gemma2_text`, the text
    tower alone) with random norms and layer scalars, and the word-level Gemma-template tokenizer."""
    from conftest import tiny_encoder_source_config
    from transformers import EmbeddingGemma2TextModel

    torch.manual_seed(0)
    model = EmbeddingGemma2TextModel(tiny_encoder_source_config("embedding_gemma2").text_config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.5)
        for name, buffer in model.named_buffers():
            if name.endswith("layer_scalar"):
                buffer.uniform_(0.5, 1.5)
    folder = tmp_path_factory.mktemp("embedding_gemma2")
    model.save_pretrained(folder)
    tiny_gemma_tokenizer().save_pretrained(folder)
    return folder, model


def test_embedding_gemma2_text_tower_gives_its_states_from_ids_or_embeddings(embedding_gemma2):
    """The encoder's states are EmbeddingGemma 2's before its projection (the output of its final norm), padded or
    packed; with projection-only PLE they need no token ids, so `inputs_embeds` give the same states."""
    folder, native = embedding_gemma2
    model = GemmaEncoderModel.from_decoder(folder, dtype=torch.float32).eval()
    assert model.config.decoder_model_type == "embedding_gemma2_text"
    assert not hasattr(model, "embed_tokens_per_layer")  # projection-only PLE: no per-layer table
    input_ids, attention_mask = random_batch(128, batch=3, seq=20, seed=3)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    real = attention_mask.bool()
    states = []
    hook = native.norm.register_forward_hook(lambda module, args, output: states.append(output))
    with torch.inference_mode():
        native(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
        hook.remove()
        for packed in ("never", "always"):
            model.config.packed_execution = packed
            actual = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            assert (states[0][real] - actual[real]).abs().max() <= TOLERANCE, packed
        from_embeddings = model(inputs_embeds=model.embed_tokens(input_ids), attention_mask=attention_mask)
    assert (from_embeddings.last_hidden_state[real] - actual[real]).abs().max() <= TOLERANCE


def test_converted_embedding_gemma2_keeps_its_embedding_projection(embedding_gemma2, tmp_path):
    """SentenceTransformer(converted folder) gives EmbeddingGemma 2's mean-pooled (projected) token states: the
    projection becomes a bias-free Dense module after the encoder's mean pooling."""
    folder, native = embedding_gemma2
    out = convert(folder, tmp_path / "encoder")
    types = [entry["type"].rsplit(".", 1)[-1] for entry in json.loads((out / "modules.json").read_text())]
    assert types == ["Transformer", "Dense"]
    converted = SentenceTransformer(str(out), device="cpu")
    batch = converted.tokenizer(TEXTS, padding=True, return_tensors="pt")
    mask = batch["attention_mask"].unsqueeze(-1).float()
    with torch.inference_mode():
        projected = native(**batch).last_hidden_state
    expected = (projected * mask).sum(1) / mask.sum(1)
    actual = converted.encode(TEXTS, batch_size=3, convert_to_tensor=True)
    assert actual.shape == (len(TEXTS), 48)
    assert (expected - actual).abs().max() <= TOLERANCE
