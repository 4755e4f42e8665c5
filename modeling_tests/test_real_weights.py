"""The real Gemma 3 270M (embedded GGUF): causal parity with transformers, GGUF round trip, bidirectionality."""

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, Gemma3ForCausalLM

import gemma_encoder_hf
from gemma_encoder_hf import GemmaEncoderModel

TEXTS = [
    "a gorgeous , witty , seductive movie .",
    "the story is far-flung , illogical , and plain stupid .",
    "if you sometimes like to go to the movies to have fun , wasabi is a good place to start .",
]


def test_causal_encoder_matches_transformers_gemma3_on_real_weights(real_encoder_dir, real_native_decoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(real_encoder_dir)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "left" and not batch["attention_mask"].all(), "want a left-padded batch"
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)

    native = Gemma3ForCausalLM.from_pretrained(real_native_decoder_dir, dtype=torch.float32).model.eval()
    ours = GemmaEncoderModel.from_pretrained(real_encoder_dir, attention="causal", dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = native(**batch, position_ids=position_ids).last_hidden_state
        actual = ours(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert (expected[real] - actual[real]).abs().max() <= 1e-4


def test_gguf_conversion_round_trip_is_exact(real_encoder_artifacts):
    """`real_encoder_artifacts` holds outputs of the in-memory conversion from the GGUF, taken before saving."""
    reference = torch.load(real_encoder_artifacts / "reference.pt")
    encoder_dir = real_encoder_artifacts / "encoder"
    assert AutoConfig.from_pretrained(encoder_dir).model_type == "gemma_encoder"
    for loaded in (GemmaEncoderModel.from_pretrained(encoder_dir), AutoModel.from_pretrained(encoder_dir)):
        assert isinstance(loaded, GemmaEncoderModel)
        with torch.inference_mode():
            outputs = loaded.eval()(**reference["batch"])
        assert torch.equal(outputs.last_hidden_state, reference["last_hidden_state"])
        assert torch.equal(outputs.pooler_output, reference["pooler_output"])


def test_real_encoder_is_bidirectional_and_tokenizer_is_prepared(real_encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(real_encoder_dir)
    pair = tokenizer("first text", "second text")["input_ids"]
    assert pair[0] == tokenizer.bos_token_id and pair.count(tokenizer.bos_token_id) == 1
    assert tokenizer.eos_token_id in pair
    assert tokenizer.model_max_length == 32_768

    model = GemmaEncoderModel.from_pretrained(real_encoder_dir).eval()
    ids = tokenizer(["a gorgeous , witty , seductive movie ."], return_tensors="pt")["input_ids"]
    changed = ids.clone()
    changed[0, -1] = tokenizer.convert_tokens_to_ids("▁boring")
    with torch.inference_mode():
        first = model(input_ids=ids).last_hidden_state[0, 1]
        first_changed = model(input_ids=changed).last_hidden_state[0, 1]
    assert (first - first_changed).abs().max() > 1e-3
    assert gemma_encoder_hf.GemmaEncoderConfig.from_pretrained(real_encoder_dir).decoder_model_type == "gemma3_text"
