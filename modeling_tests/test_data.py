"""Data readers on the real shared files, deterministic splits, user tables and ranking groups."""

import importlib.util
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from gemma_encoder_hf.harness import data
from gemma_encoder_hf.harness.errors import InvalidArgumentError, PathNotFoundError

REPO = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="module")
def sst2_split():
    spec = data.get_task("sst2")
    pool = data.load_glue(spec, ROOT)
    return pool, data.train_validation_split(pool, spec, seed=0)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


@needs_data
def test_sst2_validation_is_full_sentences_like_the_dev_set(sst2_split):
    """The official dev set is 872 full sentences (444 positive), mean 19.5 words; the training file is mostly their
    sub-phrases (mean 9.4). The validation split must look like dev, not like the training file."""
    pool, (train, validation) = sst2_split
    assert len(validation) == 872
    lengths = [len(t.split()) for t in validation["text"]]
    assert abs(np.mean(lengths) - 19.5) < 2.0 and np.median(lengths) >= 16
    assert np.mean([len(t.split()) for t in pool["text"]]) < 10  # what a random split would have measured
    assert abs(np.mean(validation["label"]) - 444 / 872) < 0.03
    # Full sentences: no validation row is a sub-phrase of any other row of the pool.
    padded_pool = [f" {t} " for t in set(pool["text"])]
    for sentence in validation["text"][:40]:
        assert sum(f" {sentence} " in other for other in padded_pool) == 1, sentence


@needs_data
def test_sst2_training_side_holds_no_piece_of_a_validation_sentence(sst2_split):
    pool, (train, validation) = sst2_split
    pieces = set()
    for sentence in validation["text"]:
        words = _words(sentence)
        pieces.update(words[i:j] for i in range(len(words)) for j in range(i + 1, len(words) + 1))
    assert not any(_words(t) in pieces for t in train["text"])
    # ... and nothing else was dropped: every pool row is on one side or is a piece of a validation sentence.
    assert len(train) == sum(_words(t) not in pieces for t in pool["text"])
    assert len(train) > 50_000  # the pieces are a small part of the pool


@needs_data
def test_sst2_split_is_deterministic_and_seeded(sst2_split):
    pool, (train, validation) = sst2_split
    spec = data.get_task("sst2")
    train_b, validation_b = data.dev_shaped_split(pool, spec, seed=0)
    assert validation_b["text"] == validation["text"] and len(train_b) == len(train)
    _, validation_c = data.dev_shaped_split(pool, spec, seed=1)
    assert validation_c["text"] != validation["text"]


@needs_data
def test_prompt_selection_scores_training_full_sentences_never_validation(sst2_split):
    """`benchmarks/prompt_selection.py` picks a prompt on training-side full sentences: a prompt picked there has not
    seen the validation split the fine-tunes are judged on."""
    pool, (train, validation) = sst2_split
    spec = importlib.util.spec_from_file_location("prompt_selection", REPO / "benchmarks" / "prompt_selection.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    texts, labels = benchmark.selection_rows(ROOT, 200, seed=0)
    assert len(texts) == len(set(texts)) == 200 and labels.tolist().count(1) == 100
    assert not set(texts) & set(validation["text"])
    train_label = dict(zip(train["text"], train["label"]))
    assert [train_label[t] for t in texts] == labels.tolist()
    full = {train["text"][i] for i in data.full_sentence_rows(train["text"])}
    assert set(texts) <= full
    assert np.mean([len(t.split()) for t in texts]) > 15  # sentences like the dev set's, not the file's phrases
    again, _ = benchmark.selection_rows(ROOT, 200, seed=0)
    assert again == texts and benchmark.selection_rows(ROOT, 200, seed=1)[0] != texts


@needs_data
@pytest.mark.parametrize(
    "task, dev_size, tolerance",
    [("mrpc", 408, 15), ("rte", 277, 15), ("stsb", 1_500, 100), ("qnli", 546, 20), ("cola", 527, 0)],
)
def test_dev_shaped_splits_of_the_other_tasks(task, dev_size, tolerance):
    spec = data.get_task(task)
    pool = data.load_glue(spec, ROOT)
    train, validation = data.train_validation_split(pool, spec, seed=0)
    assert abs(len(validation) - dev_size) <= tolerance
    assert len(train) + len(validation) == len(pool)
    again_train, again = data.train_validation_split(pool, spec, seed=0)
    assert again["text"] == validation["text"] and again_train["text"] == train["text"]
    if spec.is_pair:
        # No text, first or second of a pair, on both sides of the split.
        train_texts = set(train["text"]) | set(train["text_pair"])
        assert not (set(validation["text"]) | set(validation["text_pair"])) & train_texts
    # Same form as the pool: lengths and labels (or scores) distributed alike.
    for column in ["text", "text_pair"] if spec.is_pair else ["text"]:
        mean_words = np.mean([len(t.split()) for t in pool[column]])
        assert abs(np.mean([len(t.split()) for t in validation[column]]) - mean_words) < 0.1 * mean_words
    assert abs(np.mean(validation["label"]) - np.mean(pool["label"])) < (0.15 if task == "stsb" else 0.03)
    # The budgets the benchmarks ask for fit in the training side.
    assert len(train) >= {"cola": 8_000, "rte": 2_200}.get(task, 2_000)


@needs_data
def test_explicit_validation_size_is_a_random_stratified_split():
    spec = data.get_task("sst2")
    pool = data.load_glue(spec, ROOT)
    train, validation = data.train_validation_split(pool, spec, validation_size=0.1, seed=0)
    assert len(validation) == 2_000 and len(train) == len(pool) - 2_000  # 10% capped at 2,000
    positive_share = np.mean(pool["label"])
    assert abs(np.mean(validation["label"]) - positive_share) < 0.001  # stratified
    small = data.subsample(train, 500, spec, seed=0)
    assert len(small) == 500 and small["text"] == data.subsample(train, 500, spec, seed=0)["text"]
    assert abs(np.mean(small["label"]) - positive_share) < 0.01
    # A user's own data (no dev set to imitate) gets the random split by default.
    mine = data.custom_task("mine", num_labels=2)
    _, validation = data.train_validation_split(pool.select(range(1_000)), mine, seed=0)
    assert len(validation) == 100


def test_full_sentence_rows_finds_rows_no_other_row_contains():
    texts = ["a b c d .", "b c", "c d", "a b c d .", "x y", "y", "b d", "c d e"]
    # "b c" and "c d" sit inside "a b c d ."; "y" inside "x y"; "b d" is not contiguous anywhere; "c d e" is new.
    assert data.full_sentence_rows(texts).tolist() == [0, 3, 4, 6, 7]


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
