"""Data readers on the real shared files, deterministic splits, user tables and ranking groups."""

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gemma_encoder_hf.harness import data
from gemma_encoder_hf.harness.errors import InvalidArgumentError, PathNotFoundError

ROOT = Path(os.environ.get(data.DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(not ROOT.is_dir(), reason=f"the shared data folder {ROOT} is not beside the repo")


# Counts from each folder's PROVENANCE.md (rows, and the label counts it states).
@needs_data
@pytest.mark.parametrize(
    "task, rows, label_counts, pair",
    [
        ("sst2", 67_349, {1: 37_569, 0: 29_780}, False),
        ("cola", 8_551, {1: 6_023, 0: 2_528}, False),
        ("mrpc", 3_668, {1: 2_474, 0: 1_194}, True),
        ("rte", 2_490, {0: 1_249, 1: 1_241}, True),  # 0 = entailment
        ("qnli", 2_732, None, True),
        ("stsb", 5_749, None, True),
    ],
)
def test_glue_readers_match_provenance(task, rows, label_counts, pair):
    spec = data.get_task(task)
    pool = data.load_glue(spec, ROOT)
    assert len(pool) == rows
    assert ("text_pair" in pool.column_names) == pair == spec.is_pair
    if label_counts is not None:
        assert dict(Counter(pool["label"])) == label_counts
    if task == "stsb":
        assert min(pool["label"]) == 0.0 and max(pool["label"]) == 5.0
        assert pool[0]["text"] == "A plane is taking off." and pool[0]["label"] == 5.0
    if task == "mrpc":  # the BOM-prefixed header is read as a header, and raw quotes stay in the text
        assert pool[0]["text"].startswith('Amrozi accused his brother, whom he called "the witness"')
    if task == "cola":  # no header: the first data row is a sentence, not column names
        assert pool[0]["text"] == "Our friends won't buy this analysis, let alone the next one we propose."


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match="sst2"):
        data.get_task("mnli")


@needs_data
def test_beir_readers_match_provenance():
    test = data.load_reranking(ROOT / "scifact", "test")
    assert (len(test.corpus), len(test.queries), len(test.qrels)) == (5_183, 150, 150)
    assert sum(map(len, test.qrels.values())) == 165
    assert sum(map(len, test.candidates.values())) == 14_966
    ranked = test.candidates["1"]
    assert ranked[0][0] == "34386619" and ranked[0][1] == pytest.approx(5.1287)
    assert all(a[1] >= b[1] for a, b in zip(ranked, ranked[1:]))  # BM25 order

    train = data.load_reranking(ROOT / "scifact", "train")
    assert (len(train.queries), sum(map(len, train.qrels.values())), sum(map(len, train.candidates.values()))) == (
        809, 919, 80_827)

    dl19 = data.load_reranking(ROOT / "msmarco-dl19-subset", "test")
    assert (len(dl19.corpus), len(dl19.queries), sum(map(len, dl19.qrels.values()))) == (5_000, 22, 2_503)
    assert max(g for docs in dl19.qrels.values() for g in docs.values()) == 3  # graded judgments survive

    small = test.restrict(max_queries=2, top_k=5)
    assert list(small.queries) == sorted(test.queries, key=int)[:2]
    assert all(len(c) == 5 for c in small.candidates.values())


def test_not_a_beir_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        data.load_reranking(tmp_path)


@needs_data
def test_validation_split_is_deterministic_stratified_and_budget_independent():
    spec = data.get_task("sst2")
    pool = data.load_glue(spec, ROOT)
    train_a, val_a = data.train_validation_split(pool, spec, seed=0)
    train_b, val_b = data.train_validation_split(pool, spec, seed=0)
    _, val_c = data.train_validation_split(pool, spec, seed=1)
    assert len(val_a) == 2_000 and len(train_a) == len(pool) - 2_000  # 10% capped at 2,000
    assert val_a["text"] == val_b["text"] and train_a["text"][:100] == train_b["text"][:100]
    assert val_a["text"] != val_c["text"]
    positive_share = np.mean(pool["label"])
    assert abs(np.mean(val_a["label"]) - positive_share) < 0.001  # stratified
    small = data.subsample(train_a, 500, spec, seed=0)
    assert len(small) == 500 and small["text"] == data.subsample(train_a, 500, spec, seed=0)["text"]
    assert abs(np.mean(small["label"]) - positive_share) < 0.01


def test_user_tables_tsv_csv_jsonl(tmp_path):
    spec = data.custom_task("mine", num_labels=2, pair=True, label_names=["no", "yes"])
    (tmp_path / "a.tsv").write_text('q\td\ty\nwhat "quoted"?\tdoc one\tyes\nsecond\tdoc two\t0\n')
    (tmp_path / "a.csv").write_text('q,d,y\n"what, with comma?",doc one,1\nsecond,doc two,no\n')
    (tmp_path / "a.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [{"q": "x", "d": "y", "y": 1}, {"q": "z", "d": "w", "y": "no"}]) + "\n"
    )
    columns = dict(text_column="q", pair_column="d", label_column="y")
    tsv = data.load_table(tmp_path / "a.tsv", spec, **columns)
    assert tsv["text"] == ['what "quoted"?', "second"] and tsv["label"] == [1, 0]
    csv_rows = data.load_table(tmp_path / "a.csv", spec, **columns)
    assert csv_rows["text"][0] == "what, with comma?" and csv_rows["label"] == [1, 0]
    assert data.load_table(tmp_path / "a.jsonl", spec, **columns)["label"] == [1, 0]

    # Library terms: the parameter that named the missing column, and the columns there are; no CLI flag.
    with pytest.raises(InvalidArgumentError, match=r"no column 'sentence' \(text_column\), 'label' \(label_column\); "
                       r"its columns are \['q', 'd', 'y'\]") as info:
        data.load_table(tmp_path / "a.tsv", spec, text_column="sentence")
    assert info.value.argument == "text_column" and "--" not in str(info.value)
    (tmp_path / "bad.tsv").write_text("q\td\ty\nx\ty\tmaybe\n")
    with pytest.raises(ValueError, match="'maybe' is neither a class id nor one of"):
        data.load_table(tmp_path / "bad.tsv", spec, **columns)
    (tmp_path / "a.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match="unsupported file type '.parquet'"):
        data.load_table(tmp_path / "a.parquet", spec)


@needs_data
def test_ranking_groups_use_bm25_hard_negatives():
    train = data.load_reranking(ROOT / "scifact", "train")
    groups = data.ranking_groups(train, 4, seed=0, hard_negative_depth=30, max_queries=20)
    again = data.ranking_groups(train, 4, seed=0, hard_negative_depth=30, max_queries=20)
    assert groups["documents"] == again["documents"]
    text_to_id = {text: doc for doc, text in train.corpus.items()}
    query_to_id = {text: q for q, text in train.queries.items()}
    assert len(groups) >= 20  # one group per relevant document of each of the 20 queries
    for row in groups:
        qid = query_to_id[row["query"]]
        ids = [text_to_id[d] for d in row["documents"]]
        assert row["labels"] == [1, 0, 0, 0] and len(set(ids)) == 4
        assert train.qrels[qid][ids[0]] > 0
        top = {d for d, _ in train.candidates[qid][:30]}
        assert all(d not in train.qrels[qid] for d in ids[1:])
        assert all(d in top for d in ids[1:]) or len(top) < 30
    with pytest.raises(ValueError, match="at least one negative"):
        data.ranking_groups(train, 1)


def test_integer_labels_that_are_not_class_ids_become_classes_in_ascending_order(tmp_path):
    """1-5 stars with num_labels=5 (the example in finetune_glue.py's help): star 1 -> id 0 ... star 5 -> id 4, and
    the star values are the class names (id2label), instead of "label 5 is outside [0, 5)"."""
    rows = [("great", 5), ("awful", 1), ("fine", 3), ("good", 4), ("meh", 2), ("superb", 5)]
    (tmp_path / "reviews.csv").write_text("review,stars\n" + "".join(f"{t},{s}\n" for t, s in rows))
    spec = data.custom_task("reviews", num_labels=5)
    reviews = data.load_table(tmp_path / "reviews.csv", spec, text_column="review", label_column="stars")
    assert reviews["label"] == [4, 0, 2, 3, 1, 4]
    task = spec.with_labels_of(reviews)
    assert task.model_kwargs()["id2label"] == {0: "1", 1: "2", 2: "3", 3: "4", 4: "5"}
    # Splits keep the class names.
    train, _ = data.train_validation_split(reviews, task, validation_size=1, seed=0)
    assert spec.with_labels_of(train).label_names == ("1", "2", "3", "4", "5")
    # Ids 0..n-1 stay ids, and names given by the user stay theirs.
    (tmp_path / "ids.csv").write_text("review,stars\na,0\nb,1\n")
    ids = data.load_table(tmp_path / "ids.csv", data.custom_task("ids", num_labels=2), text_column="review",
                          label_column="stars")
    assert ids["label"] == [0, 1] and ids.features["label"].names == ["0", "1"]
    # Three distinct values cannot be five classes: say so.
    (tmp_path / "three.csv").write_text("review,stars\na,1\nb,3\nc,5\n")
    with pytest.raises(InvalidArgumentError, match=r"labels \[1, 3, 5\] are not class ids 0..4, and there are 3 "):
        data.load_table(tmp_path / "three.csv", spec, text_column="review", label_column="stars")


def test_no_data_root_baked_into_the_package(tmp_path, monkeypatch):
    """The data root is an argument or GEMMA_ENCODER_DATA; without either the error says how to give one."""
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    assert not hasattr(data, "DEFAULT_DATA_ROOT")
    with pytest.raises(InvalidArgumentError, match="pass data_root .* or set the environment variable "
                       "GEMMA_ENCODER_DATA") as info:
        data.load_glue("sst2")
    assert info.value.argument == "data_root"
    with pytest.raises(PathNotFoundError, match="holds no sst2/train.tsv"):
        data.load_glue("sst2", tmp_path)
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path))
    assert data.load_glue("sst2")["label"] == [1, 0]
