"""GemmaEncoderForMaskedLM, the fill-mask pipeline and the MNTP / MLM adaptation stage (`gemma-encoder adapt`)."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import DECODER_CLASSES, GENERATIONS, random_batch
from safetensors.torch import load_file
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from gemma_encoder_hf import (
    GemmaEncoderConfig,
    GemmaEncoderForMaskedLM,
    GemmaEncoderForSequenceClassification,
)
from gemma_encoder_hf.harness.adaptation import adapt, masking_collator, read_texts
from gemma_encoder_hf.harness.cli import main as cli_main
from gemma_encoder_hf.harness.errors import InvalidArgumentError


@pytest.fixture(scope="module")
def tokenizer(real_encoder_dir):
    """The real Gemma 3 tokenizer (262k vocabulary, `<mask>` = id 4), loaded once: it takes seconds on 2 cores."""
    return AutoTokenizer.from_pretrained(real_encoder_dir)


TEXTS = [
    "a gripping , beautifully shot film",
    "the plot is thin and the jokes fall flat",
    "one of the best performances of the year",
    "I walked out halfway through",
]


# ----------------------------------------------------------------------------------------------------------------------
# The model: objective, head tying, loss
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", GENERATIONS)
def test_causal_mntp_logits_equal_decoder_next_token_logits(tiny_decoder_dirs, generation):
    """With the decoder's own mask, MNTP's logits at i are the decoder's logits at i - 1 (Gemma 2: soft-capped)."""
    path = tiny_decoder_dirs[generation]
    encoder = GemmaEncoderForMaskedLM.from_decoder(path, attention="causal").eval()
    decoder = DECODER_CLASSES[generation].from_pretrained(path).eval()
    assert encoder.lm_head.weight is encoder.model.embed_tokens.weight
    input_ids, _ = random_batch(encoder.config.vocab_size, batch=2, seq=10)
    with torch.no_grad():
        ours = encoder(input_ids).logits
        theirs = decoder(input_ids).logits
    torch.testing.assert_close(ours[:, 1:], theirs[:, :-1], rtol=1e-5, atol=1e-5)


def test_mntp_and_mlm_loss_on_hand_made_labels(tiny_decoder_dirs):
    """MNTP predicts the token at i from the state at i - 1; MLM from the state at i. Only labelled positions count."""
    model = GemmaEncoderForMaskedLM.from_decoder(tiny_decoder_dirs["gemma3"]).eval()
    input_ids = torch.tensor([[2, 17, 4, 33, 4, 51]])  # <bos> a <mask> b <mask> c
    labels = torch.full_like(input_ids, -100)
    labels[0, 2], labels[0, 4] = 25, 40  # the tokens hidden behind the two masks
    with torch.no_grad():
        hidden = model.model(input_ids).last_hidden_state[0]
        vocab = hidden @ model.model.embed_tokens.weight.T

        mntp = model(input_ids, labels=labels)
        expected = F.cross_entropy(vocab[[1, 3]], torch.tensor([25, 40]))
        torch.testing.assert_close(mntp.loss, expected)
        assert mntp.logits.shape == (2, model.config.vocab_size)  # sparse: labelled positions only
        full = model(input_ids).logits[0]
        torch.testing.assert_close(full[2], vocab[1])
        torch.testing.assert_close(full[4], vocab[3])

        model.config.masked_lm_objective = "mlm"
        mlm = model(input_ids, labels=labels)
        torch.testing.assert_close(mlm.loss, F.cross_entropy(vocab[[2, 4]], torch.tensor([25, 40])))

        # A batch in which the collator masked nothing: zero loss, not NaN.
        assert model(input_ids, labels=torch.full_like(input_ids, -100)).loss.item() == 0.0
    with pytest.raises(ValueError, match="shape of input_ids"):
        model(input_ids, labels=labels[:, :3])
    with pytest.raises(ValueError, match="masked_lm_objective"):
        GemmaEncoderConfig(masked_lm_objective="clm")


def test_mntp_never_predicts_across_texts_of_a_flattened_row(tiny_decoder_dirs):
    """Two texts flattened into one row (position_ids restart) give the loss of the same texts as a padded batch."""
    model = GemmaEncoderForMaskedLM.from_decoder(tiny_decoder_dirs["gemma3"]).eval()
    first, second = torch.randint(3, 128, (7,)), torch.randint(3, 128, (5,))
    padded = torch.zeros(2, 7, dtype=torch.long)
    padded[0], padded[1, :5] = first, second
    mask = (padded != 0).long()
    labels = padded.masked_fill(mask == 0, -100)
    flat = torch.cat([first, second])[None]
    positions = torch.cat([torch.arange(7), torch.arange(5)])[None]
    with torch.inference_mode():
        expected = model(input_ids=padded, attention_mask=mask, labels=labels).loss
        actual = model(input_ids=flat, position_ids=positions, labels=flat.clone()).loss
    assert torch.allclose(actual, expected, atol=1e-5), (actual, expected)


def test_masking_collator_uses_mask_token_and_spares_special_tokens(tokenizer):
    collator = masking_collator(tokenizer, mask_rate=0.5, masking="mask", seed=0)
    originals = [tokenizer(t)["input_ids"] for t in TEXTS]
    batch = collator([{"input_ids": ids} for ids in originals])
    padded = tokenizer.pad({"input_ids": originals}, pad_to_multiple_of=8, return_tensors="pt")["input_ids"]
    assert batch["input_ids"].shape == padded.shape and padded.shape[1] % 8 == 0
    selected = batch["labels"] != -100
    assert selected.any()
    assert (batch["input_ids"][selected] == tokenizer.mask_token_id).all()
    assert torch.equal(batch["labels"][selected], padded[selected])
    assert torch.equal(batch["input_ids"][~selected], padded[~selected])
    special = (padded == tokenizer.bos_token_id) | (padded == tokenizer.pad_token_id)
    assert not selected[special].any()
    with pytest.raises(ValueError, match="mask_rate"):
        masking_collator(tokenizer, mask_rate=1.5)


# ----------------------------------------------------------------------------------------------------------------------
# Real Gemma 3 270M: AutoModelForMaskedLM and fill-mask
# ----------------------------------------------------------------------------------------------------------------------


def test_fill_mask_pipeline_on_real_270m(real_encoder_dir, tokenizer):
    model = AutoModelForMaskedLM.from_pretrained(real_encoder_dir)
    assert isinstance(model, GemmaEncoderForMaskedLM)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert tokenizer.mask_token == "<mask>"
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)

    # Gemma's tokens carry their leading space, so the mask replaces " Paris", not "Paris".
    results = fill("The capital of France is<mask>.", top_k=10)
    assert [set(r) for r in results] == [{"score", "token", "token_str", "sequence"}] * 10
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    assert " Paris" in [r["token_str"] for r in results]

    # The default MNTP reading is what the unadapted model is good at (measured: p(" Paris") 0.071 vs 0.014); the
    # MLM reading (state at i) of an unadapted model predicts the token after the mask instead.
    mntp_paris = fill("The capital of France is<mask>.", targets=[" Paris"])[0]["score"]
    model.config.masked_lm_objective = "mlm"
    assert fill("The capital of France is<mask>.", top_k=1)[0]["token_str"] == "."
    mlm_paris = fill("The capital of France is<mask>.", targets=[" Paris"])[0]["score"]
    assert mntp_paris > 3 * mlm_paris


# ----------------------------------------------------------------------------------------------------------------------
# Adaptation
# ----------------------------------------------------------------------------------------------------------------------


def test_adapt_cli_end_to_end_on_real_270m(real_encoder_dir, tmp_path, capsys):
    """`gemma-encoder adapt` on the embedded model, offline, 2 steps (top 3 layers bidirectional): a folder that a
    classifier loads, changed, with the adapted attention in its config."""
    text_file = tmp_path / "texts.txt"
    text_file.write_text("\n".join(TEXTS) + "\n\n")
    out = tmp_path / "adapted"
    code = cli_main(
        ["adapt", str(real_encoder_dir), str(out), "--text", str(text_file), "--steps", "2", "--batch-size", "1",
         "--max-length", "16", "--learning-rate", "1e-4", "--bidirectional-layers", "3", "--device", "cpu"]
    )
    assert code == 0
    record = json.loads((out / "adaptation.json").read_text())
    assert record["steps"] == 2 and record["num_texts"] == 4 and record["objective"] == "mntp"
    assert record["bidirectional_layers"] == 3
    # 2 steps of 1 text see 2 of the 4 texts, and the command says so (not "adapted on 4 texts").
    assert record["num_texts_seen"] == 2 and "adapted on 2 of 4 texts" in capsys.readouterr().out
    assert record["mean_loss"] > 0

    classifier, info = GemmaEncoderForSequenceClassification.from_pretrained(
        out, num_labels=2, output_loading_info=True
    )
    assert not [k for k in info["missing_keys"] if not k.startswith("score.")]
    assert classifier.config.masked_lm_objective == "mntp" and classifier.config.bidirectional_layers == 3
    before = load_file(real_encoder_dir / "model.safetensors")
    after = classifier.model.state_dict()
    assert not torch.equal(before["layers.0.self_attn.q_proj.weight"], after["layers.0.self_attn.q_proj.weight"])
    assert torch.equal(before["embed_tokens.weight"], after["embed_tokens.weight"])  # frozen by default
    assert isinstance(AutoModelForMaskedLM.from_pretrained(out), GemmaEncoderForMaskedLM)


def _tiny_real_vocab_model() -> GemmaEncoderForMaskedLM:
    """A random two-layer encoder with Gemma 3's real vocabulary, so the real tokenizer drives it."""
    torch.manual_seed(0)
    config = GemmaEncoderConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
    )
    return GemmaEncoderForMaskedLM(config)


def test_lora_adaptation_is_merged_into_plain_weights(tokenizer, tmp_path):
    model = _tiny_real_vocab_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    out = adapt(model, TEXTS * 2, tmp_path / "lora", tokenizer=tokenizer, lora=True, steps=3, batch_size=2,
                learning_rate=1e-2, device="cpu", objective="mlm")
    saved = load_file(out / "model.safetensors")
    assert not [k for k in saved if "lora" in k]
    assert set(saved) <= set(original)
    changed = [k for k in saved if not torch.equal(saved[k], original[k])]
    assert changed and all(k.endswith("proj.weight") for k in changed)
    record = json.loads((out / "adaptation.json").read_text())
    assert record["lora_rank"] == 16 and record["num_texts"] == 8 and record["num_texts_seen"] == 6
    reloaded = AutoModelForMaskedLM.from_pretrained(out)
    assert reloaded.config.masked_lm_objective == "mlm"


def test_adaptation_with_only_the_top_layers_bidirectional(tokenizer, tmp_path):
    """`bidirectional_layers=1` adapts (and saves) an encoder whose lower layer keeps the decoder's causal mask: its
    states for a prefix do not depend on the tokens after it, while the top layer's do. Without the argument every
    layer attends both ways."""
    model = _tiny_real_vocab_model()
    out = adapt(model, TEXTS, tmp_path / "top1", tokenizer=tokenizer, steps=1, batch_size=2, device="cpu",
                bidirectional_layers=1)
    record = json.loads((out / "adaptation.json").read_text())
    assert (record["attention"], record["bidirectional_layers"]) == ("bidirectional", 1)
    ids, changed = torch.tensor([[2, 10, 11, 12, 13]]), torch.tensor([[2, 10, 11, 12, 99]])

    def states(folder):
        encoder = AutoModelForMaskedLM.from_pretrained(folder).eval()
        with torch.no_grad():
            return [encoder.model(input_ids=x, output_hidden_states=True).hidden_states for x in (ids, changed)]

    (low, top), (low_changed, top_changed) = [(h[1], h[2]) for h in states(out)]
    torch.testing.assert_close(low[:, :4], low_changed[:, :4])
    assert not torch.allclose(top[:, :4], top_changed[:, :4])
    every = adapt(model, TEXTS, tmp_path / "all", tokenizer=tokenizer, steps=1, batch_size=2, device="cpu")
    low, low_changed = (h[1] for h in states(every))
    assert not torch.allclose(low[:, :4], low_changed[:, :4])


def test_adapt_rejects_bad_input(tokenizer, tmp_path):
    model = _tiny_real_vocab_model()
    with pytest.raises(ValueError, match="non-empty text"):
        adapt(model, ["", "  "], tmp_path / "x", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="objective"):
        adapt(model, TEXTS, tmp_path / "x", tokenizer=tokenizer, objective="clm")
    with pytest.raises(ValueError, match="pass its tokenizer"):
        adapt(model, TEXTS, tmp_path / "x")
    table = tmp_path / "texts.tsv"
    table.write_text("id\tsentence\n1\thello there\n")
    # Library errors speak of the parameter (`column`), never of a command-line flag.
    with pytest.raises(InvalidArgumentError, match=r"is a table: name the column .*\['id', 'sentence'\]") as info:
        read_texts(table)
    assert info.value.argument == "column" and "--" not in str(info.value)
    with pytest.raises(InvalidArgumentError, match=r"has no column 'sentense'; its columns are \['id', 'sentence'\]"):
        read_texts(table, "sentense")
    assert read_texts(table, "sentence") == ["hello there"]
    with pytest.raises(ValueError, match="device='tpu' is not supported"):
        adapt(model, TEXTS, tmp_path / "x", tokenizer=tokenizer, device="tpu")


def test_adapt_cli_names_the_missing_column_and_lists_the_columns(tmp_path, capsys):
    """`adapt --column sentense`: the error says the column does not exist and lists the columns (it used to tell
    the user to pass --column, which they had), in argparse's format, exit status 2, no traceback."""
    table = tmp_path / "texts.tsv"
    table.write_text("id\tsentence\n1\thello there\n")
    assert cli_main(["adapt", "embedded", str(tmp_path / "out"), "--text", str(table), "--column", "sentense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gemma-encoder adapt: error: argument --column: ")
    assert "has no column 'sentense'; its columns are ['id', 'sentence']" in err and "Traceback" not in err


def test_adapt_cli_without_data_root_says_how_to_give_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GEMMA_ENCODER_DATA", raising=False)
    assert cli_main(["adapt", "embedded", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gemma-encoder adapt: error: argument --data: No data root given")
    assert "GEMMA_ENCODER_DATA" in err
    monkeypatch.setenv("GEMMA_ENCODER_DATA", str(tmp_path / "nowhere"))
    assert cli_main(["adapt", "embedded", str(tmp_path / "out")]) == 2
    assert f"GEMMA_ENCODER_DATA={tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().err
