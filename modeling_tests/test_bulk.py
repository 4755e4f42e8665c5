"""Bulk inference (`gemma_encoder_hf.harness.bulk`, `gemma-encoder embed|classify|score`): streamed shards, resume
after SIGKILL, data-parallel ranks, bad rows; all on tiny random models with a tiny word-level tokenizer (what is
tested here does not depend on Gemma's tokenizer or weights)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_encoder_config
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from gemma_encoder_hf import GemmaEncoderForRanking, GemmaEncoderForSequenceClassification, GemmaEncoderModel
from gemma_encoder_hf.harness import bulk
from gemma_encoder_hf.harness.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
WORDS = [f"w{i}" for i in range(120)]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over WORDS with Gemma's special-token layout: <bos> text <eos> [text_pair <eos>]."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", pair="<bos> $A <eos> $B <eos>", special_tokens=[("<bos>", 2), ("<eos>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=64,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bulk_models")
    tokenizer = tiny_tokenizer()
    built = {
        "base": GemmaEncoderModel(tiny_encoder_config()),
        "classifier": GemmaEncoderForSequenceClassification(
            tiny_encoder_config(num_labels=3, id2label={0: "neg", 1: "neutral", 2: "pos"})
        ),
        "ranker": GemmaEncoderForRanking(tiny_encoder_config()),
    }
    paths = {}
    for name, model in built.items():
        torch.manual_seed(0)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def random_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts of 1 to 40 words (lengths vary, so sorting matters), ids that are not row numbers."""
    rng = np.random.default_rng(seed)
    return [
        {
            "doc": f"d{i * 7}",
            "text": " ".join(rng.choice(WORDS, rng.integers(1, 40))),
            "query": " ".join(rng.choice(WORDS, rng.integers(1, 8))),
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(*args) -> int:
    return cli_main([str(a) for a in args])


def read_output(path: Path) -> pa.Table:
    return pq.read_table(path)


def test_embed_keeps_ids_and_order_and_equals_embed(tiny_models, tmp_path):
    rows = random_rows(23)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    # Shards of 5 rows (the last one shorter), batches of 2: the sorting and re-ordering cross batch boundaries.
    report = bulk.run_bulk(
        "embed", tiny_models["base"], source, tmp_path / "out.parquet", bulk.Columns(id="doc"),
        shard_size=5, batch_size=2, show_progress_bar=False,
    )  # fmt: skip
    assert (report.rows, report.shards, report.bad_rows) == (23, 5, 0)
    table = read_output(tmp_path / "out.parquet")
    assert table.column_names == ["doc", "embedding", "error"]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert table.column("doc").to_pylist() == [r["doc"] for r in rows]
    assert table.column("error").null_count == 23
    assert not (tmp_path / "out.parquet.parts").exists()

    from gemma_encoder_hf import embed

    model = GemmaEncoderModel.from_pretrained(tiny_models["base"])
    expected = embed(model, tiny_tokenizer(), [r["text"] for r in rows], batch_size=7, show_progress_bar=False)
    got = torch.tensor(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_embed_of_an_embedding_model_applies_its_modules_as_sentence_transformers_does(tiny_models, tmp_path):
    """An EmbeddingGemma-layout folder (projections, Normalize, Matryoshka truncation): bulk vectors are the model's
    embeddings, as `SentenceTransformer(folder).encode` gives them, not the bare pooled states."""
    from sentence_transformers import SentenceTransformer

    from gemma_encoder_hf.integrations.sentence_transformers import build_sentence_transformer

    folder = tmp_path / "embedder"
    torch.manual_seed(0)
    build_sentence_transformer(tiny_models["base"], projection_dims=(48, 24), truncate_dim=16, device="cpu").save(
        str(folder)
    )
    rows = random_rows(9)
    bulk.run_bulk(
        "embed", folder, write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.parquet", bulk.Columns(id="doc"),
        shard_size=4, batch_size=3, show_progress_bar=False,
    )  # fmt: skip
    vectors = read_output(tmp_path / "out.parquet").column("embedding").to_numpy(zero_copy_only=False)
    got = torch.tensor(np.stack(vectors))
    expected = SentenceTransformer(str(folder), device="cpu").encode([r["text"] for r in rows], convert_to_tensor=True)
    assert got.shape == (9, 16)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_classify_names_labels_and_score_matches_ranker(tiny_models, tmp_path):
    rows = random_rows(9)
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    assert run_cli("classify", tiny_models["classifier"], source, tmp_path / "c.parquet", "--shard-size", 4) == 0
    table = read_output(tmp_path / "c.parquet")
    assert table.column_names == ["row", "label", "score", "scores", "error"]
    assert table.column("row").to_pylist() == list(range(9))
    assert table.schema.field("scores").type.names == ["neg", "neutral", "pos"]
    model = GemmaEncoderForSequenceClassification.from_pretrained(tiny_models["classifier"]).eval()
    with torch.no_grad():
        batch = tiny_tokenizer()([r["text"] for r in rows], padding=True, return_tensors="pt")
        probs = model(**batch).logits.softmax(-1)
    names = ["neg", "neutral", "pos"]
    assert table.column("label").to_pylist() == [names[i] for i in probs.argmax(-1).tolist()]
    got = torch.tensor([[s[n] for n in names] for s in table.column("scores").to_pylist()])
    torch.testing.assert_close(got, probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(table.column("score").to_pylist()), probs.max(-1).values, atol=1e-5, rtol=0)

    from gemma_encoder_hf import score_pairs

    out = tmp_path / "s.parquet"
    args = ["--text-column", "query", "--text-pair-column", "text", "--id-column", "doc", "--shard-size", 4]
    assert run_cli("score", tiny_models["ranker"], source, out, *args) == 0
    table = read_output(out)
    assert table.column_names == ["doc", "score", "error"]
    ranker = GemmaEncoderForRanking.from_pretrained(tiny_models["ranker"])
    expected = score_pairs(ranker, tiny_tokenizer(), [(r["query"], r["text"]) for r in rows], show_progress_bar=False)
    torch.testing.assert_close(torch.tensor(table.column("score").to_pylist()), expected, atol=1e-5, rtol=1e-5)


def test_every_input_format_gives_the_same_output(tiny_models, tmp_path):
    rows = random_rows(11)
    inputs = {"jsonl": write_jsonl(tmp_path / "in.jsonl", rows)}
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=3)  # row groups that do not align with shards
    pa_csv.write_csv(table, tmp_path / "in.csv")
    tsv_lines = [f"{r['doc']}\t{r['text']}\t{r['query']}\n" for r in rows]
    (tmp_path / "in.tsv").write_text("doc\ttext\tquery\n" + "".join(tsv_lines))
    inputs.update(parquet=tmp_path / "in.parquet", csv=tmp_path / "in.csv", tsv=tmp_path / "in.tsv")
    outputs = {}
    for name, source in inputs.items():
        out = tmp_path / f"{name}.parquet"
        assert run_cli("embed", tiny_models["base"], source, out, "--id-column", "doc", "--shard-size", 4) == 0
        outputs[name] = read_output(out)
    for name, table in outputs.items():
        assert table.equals(outputs["jsonl"]), name


def test_bad_rows_raise_or_are_kept_with_their_ids(tiny_models, tmp_path, capsys):
    rows = random_rows(10)
    lines = [json.dumps(r).encode() for r in rows]
    lines[1] = json.dumps({**rows[1], "text": ""}).encode()  # empty text
    lines[2] = json.dumps({"doc": rows[2]["doc"]}).encode()  # missing column
    lines[4] = json.dumps({**rows[4], "text": "PLACEHOLDER"}).encode().replace(b"PLACEHOLDER", b"w1 \xff\xfe w2")
    lines[6] = json.dumps({**rows[6], "text": None}).encode()  # null
    lines[8] = b'{"doc": "d56", "text": '  # truncated line
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    assert run_cli("embed", tiny_models["base"], source, tmp_path / "raise.parquet", "--id-column", "doc") == 2
    err = capsys.readouterr().err
    assert "gemma-encoder embed: error: row 1 (id 'd7'): empty 'text'" in err and "--on-error skip" in err

    out = tmp_path / "skip.parquet"
    args = ["--id-column", "doc", "--on-error", "skip", "--shard-size", 3]
    assert run_cli("embed", tiny_models["base"], source, out, *args) == 0
    assert "skipped 5 bad rows" in capsys.readouterr().out
    table = read_output(out)
    assert table.num_rows == 10
    assert table.column("doc").to_pylist() == [r["doc"] for r in rows[:8]] + [None, rows[9]["doc"]]
    errors = table.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [1, 2, 4, 6, 8]
    assert errors[1] == "empty 'text'" and errors[2] == errors[6] == "missing 'text'"
    assert errors[4] == "invalid UTF-8 in 'text' at character 3" and errors[8].startswith("invalid JSON")
    embeddings = table.column("embedding")
    assert [i for i in range(10) if not embeddings[i].is_valid] == [1, 2, 4, 6, 8]

    # The good rows get the numbers a clean file of only them gets.
    good = [0, 3, 5, 7, 9]
    clean = tmp_path / "clean.parquet"
    write_jsonl(tmp_path / "clean.jsonl", [rows[i] for i in good])
    assert run_cli("embed", tiny_models["base"], tmp_path / "clean.jsonl", clean, "--id-column", "doc") == 0
    expected = np.stack(read_output(clean).column("embedding").to_numpy(zero_copy_only=False))
    got = np.stack([embeddings[i].values.to_numpy() for i in good])
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_csv_bad_bytes_and_missing_columns(tiny_models, tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_bytes(b"id,text\na,w1 w2\nb,\nc,w3 \xc3\x28 w4\nd,w5\n")
    out = tmp_path / "out.parquet"
    assert run_cli("embed", tiny_models["base"], source, out, "--id-column", "id", "--on-error", "skip") == 0
    table = read_output(out)
    assert table.column("id").to_pylist() == ["a", "b", "c", "d"]
    assert table.column("error").to_pylist() == [None, "empty 'text'", "invalid UTF-8 in 'text' at byte 3", None]

    assert run_cli("embed", tiny_models["base"], source, tmp_path / "x.parquet", "--text-column", "body") == 2
    err = capsys.readouterr().err
    assert "has no column 'body' (its columns: 'id', 'text')" in err and "--text-column" in err


def _env() -> dict:
    # One thread per process (the processes share the machine's cores); this checkout's package first.
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_run_killed_mid_way_resumes_to_the_uninterrupted_output(tiny_models, tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", random_rows(240))
    args = ["--id-column", "doc", "--shard-size", "4", "--batch-size", "3"]
    reference = tmp_path / "reference.parquet"
    assert run_cli("classify", tiny_models["classifier"], source, reference, *args) == 0

    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    command = [sys.executable, "-m", "gemma_encoder_hf.harness.cli", "classify", tiny_models["classifier"], source, out]
    process = subprocess.Popen([str(c) for c in command + args], env=_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (parts / "part-000000.parquet").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before writing a shard"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = sorted(parts.glob("part-*.parquet"))
    assert not out.exists() and 1 <= len(written) < 60, "the kill did not land mid-way"

    capsys.readouterr()
    assert run_cli("classify", tiny_models["classifier"], source, out, *args) == 0
    assert f"(60 shards, {len(written)} resumed from an earlier run)" in capsys.readouterr().out
    assert read_output(out).equals(read_output(reference))
    assert not parts.exists()


def test_resume_refuses_shards_of_different_settings(tiny_models, tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", random_rows(6))
    parts = tmp_path / "out.parquet.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"task": "embed", "shard_size": 3}))
    assert run_cli("embed", tiny_models["base"], source, tmp_path / "out.parquet", "--shard-size", 4) == 2
    err = capsys.readouterr().err
    assert "holds shards of a different run (differs in:" in err and "shard_size" in err and "delete" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_accelerate_processes_give_the_one_process_output(tiny_models, tmp_path):
    rows = random_rows(30)
    rows[5]["text"] = " "  # a bad row in rank 1's first shard
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    args = ["--id-column", "doc", "--shard-size", "4", "--on-error", "skip", "--device", "cpu"]
    single = tmp_path / "single.parquet"
    assert run_cli("embed", tiny_models["base"], source, single, *args) == 0

    # As in test_training: accelerate's `--cpu` launches several processes only through MPI; `--multi_gpu` with no
    # visible GPU launches them with torchrun, and they talk over gloo.
    output = tmp_path / "two.parquet"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "gemma_encoder_hf.harness.cli", "embed", tiny_models["base"], source, output, *args,
    ]  # fmt: skip
    env = {**_env(), "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    # Really two ranks, each with its half of the 8 shards.
    assert "rank 0 of 2: ran 4 shards (16 rows)" in completed.stderr
    assert "rank 1 of 2: ran 4 shards (14 rows)" in completed.stderr
    assert completed.stdout.count("wrote 30 rows") == 1
    assert read_output(output).equals(read_output(single))


def test_ray_data_actor_pool_gives_the_in_process_output(tiny_models, tmp_path):
    ray = pytest.importorskip("ray")
    from gemma_encoder_hf.integrations.ray import run_ray

    rows = random_rows(20)
    rows[3]["text"] = ""
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    columns = bulk.Columns(id="doc")
    common = dict(batch_size=3, on_error="skip")
    reference = tmp_path / "reference.parquet"
    bulk.run_bulk(
        "embed", tiny_models["base"], source, reference, columns, shard_size=5, show_progress_bar=False, **common
    )

    # Two actors of half a CPU each: the read tasks that feed them need a CPU of their own.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = run_ray("embed", tiny_models["base"], source, tmp_path / "ray.parquet", columns, window=5,
                      concurrency=2, num_cpus=0.5, **common)  # fmt: skip
    finally:
        ray.shutdown()
    assert read_output(out).equals(read_output(reference))


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_classify_multi_label_and_regression_columns(problem_type, tmp_path):
    num_labels = 1 if problem_type == "regression" else 3
    config = tiny_encoder_config(num_labels=num_labels, problem_type=problem_type, id2label={0: "a", 1: "b", 2: "c"}
                                 if num_labels == 3 else None)  # fmt: skip
    torch.manual_seed(0)
    model = GemmaEncoderForSequenceClassification(config).eval()
    texts = ["w1 w2 w3", None, "w4 w5"]
    shard = bulk.Shard(index=0, start=0, ids=[0, 1, 2], texts=texts, text_pairs=None,
                       errors=[None, "empty 'text'", None])  # fmt: skip
    tokenizer = tiny_tokenizer()
    table, tokens = bulk.process_shard(shard, "classify", model, tokenizer, bulk.Columns(), batch_size=2)
    assert tokens == 5 + 4  # <bos> ... <eos>
    with torch.no_grad():
        logits = torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in (texts[0], texts[2])])
    if problem_type == "regression":
        assert table.column_names == ["row", "score", "error"]
        got = table.column("score").to_pylist()
        assert got[1] is None
        torch.testing.assert_close(torch.tensor([got[0], got[2]]), logits[:, 0], atol=1e-5, rtol=1e-5)
    else:
        assert table.column_names == ["row", "labels", "scores", "error"]
        probabilities = torch.sigmoid(logits)
        labels = table.column("labels").to_pylist()
        assert labels[1] is None
        assert [labels[0], labels[2]] == [[n for n, p in zip("abc", row) if p >= 0.5] for row in probabilities.tolist()]
        scores = table.column("scores").to_pylist()
        got = torch.tensor([[scores[i][n] for n in "abc"] for i in (0, 2)])
        torch.testing.assert_close(got, probabilities, atol=1e-5, rtol=1e-5)


def test_classify_refuses_a_model_without_a_task_head(tiny_models, tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", random_rows(2))
    assert run_cli("classify", tiny_models["base"], source, tmp_path / "out.parquet") == 2
    assert "holds GemmaEncoderModel, which has no task head" in capsys.readouterr().err


def test_dtype_runs_the_model_in_that_precision(tiny_models, tmp_path):
    model, _ = bulk.load_model(tiny_models["base"], "embed", dtype="bf16")
    assert model.dtype == torch.bfloat16
    source = write_jsonl(tmp_path / "in.jsonl", random_rows(6))
    tables = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path / f"{dtype}.parquet"
        bulk.run_bulk("embed", tiny_models["base"], source, out, dtype=dtype, show_progress_bar=False)
        tables[dtype] = np.stack(read_output(out).column("embedding").to_numpy(zero_copy_only=False))
    assert tables["bf16"].dtype == np.float32  # stored as float32 whatever the compute precision
    assert not np.array_equal(tables["bf16"], tables["fp32"])
    np.testing.assert_allclose(tables["bf16"], tables["fp32"], atol=0.1, rtol=0.05)
