"""It learns: classifiers reach >= 95% training accuracy with every pooling type; every ranking loss decreases."""

import pytest
import torch
from test_pooling import POOLINGS

from gemma_encoder_hf import (
    GemmaEncoderForRanking,
    GemmaEncoderForSequenceClassification,
)


def _separable_problem(n: int = 48, seq: int = 10, seed: int = 0):
    """Label = which half of the vocabulary a text is drawn from; texts of varied length, left padded."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    low = torch.randint(3, 64, (n, seq), generator=generator)
    high = torch.randint(64, 128, (n, seq), generator=generator)
    input_ids = torch.where(labels[:, None] == 1, high, low)
    lengths = torch.randint(3, seq + 1, (n,), generator=generator)
    attention_mask = (torch.arange(seq)[None, :] >= seq - lengths[:, None]).long()
    input_ids[attention_mask == 0] = 0
    return input_ids, attention_mask, labels


@pytest.mark.parametrize("pooling", POOLINGS, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_classifier_fits_a_separable_problem_with_every_pooling(tiny_decoder_dirs, pooling):
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification.from_decoder(
        tiny_decoder_dirs["gemma3"], num_labels=2, classifier_dropout=0.0, **pooling
    )
    input_ids, attention_mask, labels = _separable_problem()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(40):
        batch = slice((step * 16) % 48, (step * 16) % 48 + 16)
        loss = model(input_ids=input_ids[batch], attention_mask=attention_mask[batch], labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        predictions = model(input_ids=input_ids, attention_mask=attention_mask).logits.argmax(-1)
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy >= 0.95, accuracy


@pytest.mark.parametrize("loss", ["pointwise", "pairwise", "listwise"])
def test_ranking_loss_decreases(tiny_decoder_dirs, loss):
    """Groups of 1 relevant + 3 irrelevant documents: relevant ones share the query's vocabulary half."""
    torch.manual_seed(0)
    group = 4
    model = GemmaEncoderForRanking.from_decoder(
        tiny_decoder_dirs["gemma2"], ranking_loss=loss, ranking_group_size=group, classifier_dropout=0.0
    )
    input_ids, attention_mask, half = _separable_problem(n=32, seed=1)
    # Row i of group g is relevant iff it is the group's first row; make the relevant row differ from the rest.
    labels = (torch.arange(32) % group == 0).float()
    input_ids = torch.where(labels[:, None] == 1, input_ids % 61 + 64, input_ids % 61 + 3)
    input_ids[attention_mask == 0] = 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()

    def full_loss() -> float:
        with torch.no_grad():
            return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.item()

    start = full_loss()
    for step in range(15):
        batch = slice((step * 16) % 32, (step * 16) % 32 + 16)
        out = model(input_ids=input_ids[batch], attention_mask=attention_mask[batch], labels=labels[batch])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    end = full_loss()
    assert end < 0.5 * start, (start, end)


def test_ranking_batch_must_hold_whole_groups(tiny_decoder_dirs):
    model = GemmaEncoderForRanking.from_decoder(tiny_decoder_dirs["gemma"], ranking_group_size=4)
    input_ids, attention_mask, _ = _separable_problem(n=6)
    with pytest.raises(ValueError, match="multiple of the group size"):
        model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.zeros(6))
