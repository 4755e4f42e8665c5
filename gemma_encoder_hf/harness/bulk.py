# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Bulk inference over files of any size: `embed`, `classify` and `score` a JSONL, CSV/TSV or Parquet file into a
Parquet file, streaming, resumable and data-parallel.

Owns: reading the input as a stream of shards, running each shard through the package's inference runner (`embed` /
`predict_logits`, so bulk numbers are the in-process numbers), writing and merging the shards.

How a run works:

- The input is read `shard_size` rows at a time (pyarrow's streaming CSV and Parquet readers; JSONL line by line),
  so memory depends on `shard_size`, never on the file's size. A shard is also the length-sorting window: its texts
  are tokenized, sorted by length and batched, so a batch pads to the length of its own longest text.
- Each completed shard is written to `OUTPUT.parts/part-NNNNNN.parquet` under a temporary name and renamed into place,
  so a part either exists whole or not at all. A rerun skips the parts that exist (killed runs resume); a
  `manifest.json` in the folder refuses a rerun with a different model, input or settings.
- Under `accelerate launch` (or torchrun) rank r processes the shards whose index is r modulo the number of ranks;
  once every rank is done, rank 0 concatenates the parts in shard order into OUTPUT and removes OUTPUT.parts.
  A shard's numbers do not depend on which rank or run computed it, so the output equals a one-process run's.

Bad rows (a missing or null text, an empty or blank text, invalid UTF-8, a JSONL line that is not a JSON object):
`on_error="raise"` stops at the first with its row number and id; `on_error="skip"` keeps the row in the output,
with its id, null results and the reason in the `error` column, so row numbers and ids never shift.

Output columns: the id column (`--id-column`, or `row`: the row's 0-based number in the input), then
- embed: `embedding`, a fixed-size list of float32 (the model's pooled vector; for an embedding-model folder, after
  its projections, normalisation and truncation, as `embed` and `SentenceTransformer.encode` give it);
- classify: single-label models: `label` (from `config.id2label`), `score` (its probability) and `scores` (a struct
  with one probability per label name); multi-label models: `labels` (the labels with probability >= 0.5) and
  `scores` (sigmoids); one-output models (regressors): `score`;
- score: one-output models (rankers, regressors): `score`, the raw logit; others: `scores`, raw logits by label name;
- and `error` (null for good rows).
"""

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from .. import modeling
from ..integrations.inference import embed, predict_logits, truncation_length

logger = logging.getLogger(__name__)

TASKS = ("embed", "classify", "score")
ON_ERROR = ("raise", "skip")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
INPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
ROW_COLUMN = "row"
ERROR_COLUMN = "error"


class BadRowError(ValueError):
    """A row of the input cannot be processed (and `on_error="raise"`)."""


@dataclass(frozen=True)
class Columns:
    """Which input columns hold the text, the second text of a pair, and the row id."""

    text: str = "text"
    text_pair: str | None = None
    id: str | None = None

    def names(self) -> list[str]:
        return [name for name in (self.id, self.text, self.text_pair) if name is not None]


@dataclass
class Shard:
    """`len(texts)` consecutive input rows, decoded and checked; `errors[i]` is why row i is bad, or None."""

    index: int
    start: int
    ids: list
    texts: list[str | None]
    text_pairs: list[str | None] | None
    errors: list[str | None]


@dataclass
class BulkReport:
    """What a run did. `rows`/`bad_rows` count the whole output, shards resumed from an earlier run included."""

    output: Path | None
    rows: int = 0
    bad_rows: int = 0
    shards: int = 0
    shards_resumed: int = 0
    first_bad_rows: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------------


def input_format(path: Path) -> str:
    fmt = INPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot read {path}: the input must end in one of {', '.join(INPUT_FORMATS)}.")
    return fmt


def _missing_columns_error(path: Path, columns: Columns, present: list[str]) -> ValueError | None:
    missing = [name for name in columns.names() if name not in present]
    if not missing:
        return None
    return ValueError(
        f"{path} has no column {', '.join(map(repr, missing))} (its columns: {', '.join(map(repr, present))}); "
        f"name the right ones with --text-column / --text-pair-column / --id-column."
    )


def _raw_chunks(path: Path, columns: Columns, shard_size: int) -> Iterator[pa.Table | list[bytes]]:
    """The input, `shard_size` rows at a time, undecoded: JSONL lines as bytes, CSV/Parquet as Arrow tables."""
    fmt = input_format(path)
    if fmt == "jsonl":
        # Line by line rather than pyarrow's JSON reader: one bad line must be one bad row, not a failed block.
        lines = []
        with open(path, "rb") as handle:
            for line in handle:
                if not line.strip():  # blank lines (a trailing newline, separators) are not rows
                    continue
                lines.append(line)
                if len(lines) == shard_size:
                    yield lines
                    lines = []
        if lines:
            yield lines
        return
    if fmt == "parquet":
        parquet = pq.ParquetFile(path)
        error = _missing_columns_error(path, columns, parquet.schema_arrow.names)
        if error:
            raise error
        batches = parquet.iter_batches(batch_size=shard_size, columns=columns.names())
    else:
        parse = pa_csv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", quote_char=False if fmt == "tsv" else '"')
        with open(path, "rb") as handle:
            header = pa_csv.open_csv(handle, parse_options=parse).schema.names
        error = _missing_columns_error(path, columns, header)
        if error:
            raise error
        # Texts as bytes, decoded row by row (invalid UTF-8 is then one bad row); ids as strings, because the
        # streaming reader fixes a column's type from the first block and would fail on a later block that differs.
        types = {columns.text: pa.binary(), **({columns.text_pair: pa.binary()} if columns.text_pair else {})}
        if columns.id:
            types[columns.id] = pa.string()
        convert = pa_csv.ConvertOptions(include_columns=columns.names(), column_types=types)
        batches = pa_csv.open_csv(path, parse_options=parse, convert_options=convert)
    yield from _rechunk(batches, shard_size)


def _rechunk(batches, shard_size: int) -> Iterator[pa.Table]:
    """Record batches of any sizes -> tables of exactly `shard_size` rows (the last one shorter)."""
    pending, count = [], 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, shard_size - count)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == shard_size:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _check_text(value, name: str) -> tuple[str | None, str | None]:
    """(text, None) for a usable text, else (None, why not)."""
    if value is None:
        return None, f"missing {name!r}"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, f"invalid UTF-8 in {name!r} at byte {err.start}"
    if not isinstance(value, str):
        return None, f"{name!r} is a {type(value).__name__}, not a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # undecodable bytes of a JSONL line, or a JSON "\ud800" escape
        return None, f"invalid UTF-8 in {name!r} at character {err.start}"
    if not value.strip():
        return None, f"empty {name!r}"
    return value, None


def _decode(raw: pa.Table | list[bytes], index: int, start: int, columns: Columns) -> Shard:
    names = [columns.text] + ([columns.text_pair] if columns.text_pair else [])
    if isinstance(raw, pa.Table):
        ids = raw.column(columns.id).to_pylist() if columns.id else None
        records = [dict(zip(names, values)) for values in zip(*(raw.column(n).to_pylist() for n in names))]
        record_errors = [None] * len(records)
    else:
        ids, records, record_errors = [], [], []
        for line in raw:
            record, error = {}, None
            try:
                # Undecodable bytes become lone surrogates, caught per field by `_check_text`: invalid UTF-8 in a
                # text must not cost the row its id.
                record = json.loads(line.decode("utf-8", errors="surrogateescape"))
                if not isinstance(record, dict):
                    record, error = {}, "not a JSON object"
            except json.JSONDecodeError as err:
                error = f"invalid JSON ({err.msg})"
            records.append(record)
            record_errors.append(error)
            if columns.id:
                ids.append(record.get(columns.id))
    if not columns.id:
        ids = list(range(start, start + len(records)))
    texts, pairs, errors = [], [] if columns.text_pair else None, []
    for record, error in zip(records, record_errors):
        text, text_error = _check_text(record.get(columns.text), columns.text)
        pair, pair_error = (None, None)
        if columns.text_pair:
            pair, pair_error = _check_text(record.get(columns.text_pair), columns.text_pair)
        error = error or text_error or pair_error
        texts.append(None if error else text)
        if pairs is not None:
            pairs.append(None if error else pair)
        errors.append(error)
    return Shard(index=index, start=start, ids=ids, texts=texts, text_pairs=pairs, errors=errors)


def iter_shards(path: str | Path, columns: Columns, shard_size: int) -> Iterator[tuple[int, int, Callable[[], Shard]]]:
    """(index, first row number, decode) of each shard of an input file; decoding is left to the caller, so shards
    another rank or an earlier run handles cost only their reading."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    start = 0
    for index, raw in enumerate(_raw_chunks(Path(path), columns, shard_size)):
        yield index, start, partial(_decode, raw, index, start, columns)
        start += len(raw)


# ----------------------------------------------------------------------------------------------------------------------
# Running the model
# ----------------------------------------------------------------------------------------------------------------------


def load_model(model_path: str | Path, task: str, dtype: str = "fp32", device: str | torch.device = "cpu"):
    """The model and tokenizer of a saved folder, in eval mode, in `dtype` on `device`.

    `embed` needs a GemmaEncoder (its pooled vector: the base model's pooler, or a task model's head pooler);
    `classify`/`score` take any transformers sequence classifier, GemmaEncoder rankers included.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    config = AutoConfig.from_pretrained(model_path)
    architecture = (config.architectures or [None])[0]
    gemma_class = getattr(modeling, architecture, None) if architecture else None
    if task == "embed":
        if gemma_class is None or gemma_class is modeling.GemmaEncoderForMaskedLM:
            raise ValueError(
                f"embed needs a GemmaEncoder base encoder, classifier or ranker; {model_path} holds {architecture}."
            )
        model_class = gemma_class
    elif gemma_class in (modeling.GemmaEncoderForSequenceClassification, modeling.GemmaEncoderForRanking):
        model_class = gemma_class  # keeps a ranker a ranker
    elif architecture is not None and architecture.endswith("ForSequenceClassification"):
        model_class = AutoModelForSequenceClassification
    else:
        # Loading a base model as a classifier would give a randomly initialised head: numbers, but meaningless.
        raise ValueError(
            f"{task} needs a trained classifier or ranker; {model_path} holds {architecture}, which has no task head. "
            f"Fine-tune one first, or use `embed`."
        )
    model = model_class.from_pretrained(model_path, dtype=DTYPES[dtype]).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    return model, tokenizer


def run_texts(
    model: PreTrainedModel,
    tokenizer,
    task: str,
    texts: list[str],
    text_pairs: list[str] | None,
    batch_size: int,
    max_length: int | None = None,
) -> tuple[torch.Tensor, int]:
    """One shard's texts through the package's inference runner (`embed` for "embed", with an embedding model's
    prompts and modules; `predict_logits` otherwise), and the number of tokens they hold (for the throughput shown).

    Going through the public functions keeps bulk results equal to in-process ones; the token count costs a second
    tokenization (cheap next to the forward passes), to the same length as the runner's (`truncation_length`).
    """
    if task == "embed":
        outputs = embed(model, tokenizer, texts, batch_size=batch_size, show_progress_bar=False, max_length=max_length)
    else:
        if not hasattr(model.config, "num_labels"):
            raise ValueError(f"{task} needs a model with a classification head; {type(model).__name__} has none.")
        outputs = predict_logits(
            model, tokenizer, texts, text_pairs, batch_size=batch_size, show_progress_bar=False, max_length=max_length
        )
    if not texts:
        return outputs, 0
    encoded = tokenizer(texts, text_pairs, truncation=True, max_length=truncation_length(model, tokenizer, max_length))
    return outputs, sum(len(ids) for ids in encoded["input_ids"])


def _label_names(config) -> list[str]:
    return [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]


def _nullable(values: np.ndarray, valid: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    return pa.array(values, type=arrow_type, mask=~valid)


def _result_columns(task: str, config, outputs: torch.Tensor, valid: np.ndarray, normalize_embeddings: bool):
    """Arrow columns for all rows of a shard; `outputs` holds the valid rows' results, in order."""
    n = len(valid)

    def spread(values: np.ndarray) -> np.ndarray:
        full = np.zeros((n, *values.shape[1:]), dtype=np.float32)
        full[valid] = values
        return full

    if task == "embed":
        vectors = F.normalize(outputs, dim=-1) if normalize_embeddings else outputs
        flat = spread(vectors.numpy()).reshape(-1)
        return {
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat), outputs.shape[-1], mask=pa.array(~valid))
        }
    names = _label_names(config)
    if config.num_labels == 1:
        return {"score": _nullable(spread(outputs.reshape(-1, 1).numpy())[:, 0], valid, pa.float32())}
    if task == "score":
        values = spread(outputs.numpy())
    elif config.problem_type == "multi_label_classification":
        values = spread(torch.sigmoid(outputs).numpy())
    else:
        values = spread(torch.softmax(outputs, dim=-1).numpy())
    scores = pa.StructArray.from_arrays(
        [pa.array(values[:, j], pa.float32()) for j in range(len(names))], names=names, mask=pa.array(~valid)
    )
    if task == "score":
        return {"scores": scores}
    if config.problem_type == "multi_label_classification":
        labels = [[names[j] for j in np.flatnonzero(row >= 0.5)] if ok else None for row, ok in zip(values, valid)]
        return {"labels": pa.array(labels, pa.list_(pa.string())), "scores": scores}
    best = values.argmax(-1)
    return {
        "label": pa.array([names[j] if ok else None for j, ok in zip(best, valid)], pa.string()),
        "score": _nullable(values[np.arange(n), best], valid, pa.float32()),
        "scores": scores,
    }


def process_shard(
    shard: Shard,
    task: str,
    model: PreTrainedModel,
    tokenizer,
    columns: Columns,
    batch_size: int,
    normalize_embeddings: bool = False,
    max_length: int | None = None,
) -> tuple[pa.Table, int]:
    """The output table of one shard (its rows in input order) and the number of tokens run."""
    good = [i for i, error in enumerate(shard.errors) if error is None]
    valid = np.zeros(len(shard.errors), dtype=bool)
    valid[good] = True
    pairs = [shard.text_pairs[i] for i in good] if shard.text_pairs is not None else None
    # Run even when every row is bad: the empty result still has the output width (an embedding model's projection).
    outputs, tokens = run_texts(model, tokenizer, task, [shard.texts[i] for i in good], pairs, batch_size, max_length)
    try:
        ids = pa.array(shard.ids)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"the ids of rows {shard.start}-{shard.start + len(shard.ids) - 1} mix types: {err}") from err
    table = {columns.id or ROW_COLUMN: ids}
    table.update(_result_columns(task, model.config, outputs, valid, normalize_embeddings))
    table[ERROR_COLUMN] = pa.array(shard.errors, pa.string())
    return pa.table(table), tokens


# ----------------------------------------------------------------------------------------------------------------------
# Shards on disk, resume and merge
# ----------------------------------------------------------------------------------------------------------------------


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _part_path(parts: Path, index: int) -> Path:
    return parts / f"part-{index:06d}.parquet"


def _write_atomically(table: pa.Table, path: Path) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, staging)
    os.replace(staging, path)  # a part exists whole or not at all, even if the process is killed mid-write


def _check_manifest(parts: Path, manifest: dict) -> None:
    path = parts / "manifest.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous != manifest:
            changed = sorted(k for k in manifest.keys() | previous.keys() if previous.get(k) != manifest.get(k))
            raise ValueError(
                f"{parts} holds shards of a different run (differs in: {', '.join(changed)}); resume with the same "
                f"settings, or delete {parts} to start over."
            )
        return
    parts.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(".manifest.json.tmp")
    staging.write_text(json.dumps(manifest, indent=2))
    os.replace(staging, path)


def merge_parts(parts: Path, num_shards: int, output: Path) -> BulkReport:
    """Concatenate the parts in shard order into `output` (one part in memory at a time) and remove `parts`."""
    paths = [_part_path(parts, i) for i in range(num_shards)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"cannot merge {parts}: {len(missing)} shards are missing ({', '.join(missing[:3])} ...).")
    schema = pa.unify_schemas([pq.read_schema(p) for p in paths])  # a shard whose ids were all null has null ids
    report = BulkReport(output=output, shards=num_shards)
    staging = output.with_name(f".{output.name}.tmp")
    with pq.ParquetWriter(staging, schema) as writer:
        for path in paths:
            table = pq.read_table(path).cast(schema)
            writer.write_table(table)
            report.rows += table.num_rows
            bad = table.filter(pc.is_valid(table.column(ERROR_COLUMN)))
            report.bad_rows += bad.num_rows
            keep = 5 - len(report.first_bad_rows)
            report.first_bad_rows.extend(bad.slice(0, keep).select([0, ERROR_COLUMN]).to_pylist())
    os.replace(staging, output)
    shutil.rmtree(parts)
    return report


def _manifest(task, model_path, input_path: Path, columns, shard_size, dtype, normalize_embeddings, max_length) -> dict:
    """What a part depends on: a rerun resumes only when all of it is unchanged. (batch_size and device are left
    out, so a run that ran out of memory can resume with smaller batches; they change results only by rounding.)"""
    stat = input_path.stat()
    return {
        "task": task,
        "model": str(Path(model_path).resolve()) if Path(model_path).exists() else str(model_path),
        "input": str(input_path.resolve()),
        "input_bytes": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "columns": asdict(columns),
        "shard_size": shard_size,
        "dtype": dtype,
        "normalize_embeddings": normalize_embeddings,
        "max_length": max_length,
    }


def _bad_row_error(shard: Shard, i: int) -> BadRowError:
    return BadRowError(
        f"row {shard.start + i} (id {shard.ids[i]!r}): {shard.errors[i]}. Fix the input, or pass on_error='skip' "
        f"(--on-error skip) to keep such rows in the output with null results and the reason in {ERROR_COLUMN!r}."
    )


def run_bulk(
    task: str,
    model_path: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    columns: Columns = Columns(),
    *,
    shard_size: int = 10_000,
    batch_size: int = 32,
    dtype: str = "fp32",
    device: str | None = None,
    on_error: str = "raise",
    normalize_embeddings: bool = False,
    max_length: int | None = None,
    show_progress_bar: bool = True,
) -> BulkReport:
    """Run `task` ("embed", "classify" or "score") over every row of `input_path` into the Parquet file
    `output_path` (see the module docstring for the columns, resume and bad-row policy).

    Under `accelerate launch` / torchrun every rank calls this with the same arguments; each runs its share of the
    shards on its own device, and rank 0 merges. The returned report is complete on rank 0 (`output` is None on the
    other ranks).

    Args:
        shard_size: rows per shard: the unit of resume, of work split between ranks, and the length-sorting window.
        batch_size: texts per forward pass.
        dtype: "fp32", "bf16" or "fp16" (weights and activations).
        device: where the model runs (default: accelerate's device for this rank: its GPU, else the CPU).
        on_error: "raise" (stop at the first bad row) or "skip" (keep it with null results and the reason).
        normalize_embeddings: L2-normalise embeddings (embed only).
        max_length: truncate texts to this many tokens (default: the tokenizer's and the model's limit).
    """
    from accelerate import PartialState  # imported here: `gemma-encoder --help` should not pay for it

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if task == "score" and columns.text_pair is None:
        raise ValueError("score needs pairs: name the second text's column with --text-pair-column.")
    input_path, output = Path(input_path), Path(output_path)
    input_format(input_path)
    if not input_path.is_file():
        raise FileNotFoundError(f"input {input_path} does not exist.")
    if output.suffix != ".parquet":
        raise ValueError(f"the output is written as Parquet: name it *.parquet, got {output}.")
    parts = parts_dir(output)
    if output.exists() and not parts.exists():
        raise FileExistsError(f"{output} exists; delete it first (a run that was interrupted resumes from {parts}).")

    # accelerate sets up gloo for CPU ranks only when told to run on CPU.
    state = PartialState(cpu=torch.device(device).type == "cpu" if device else not torch.accelerator.is_available())
    manifest = _manifest(task, model_path, input_path, columns, shard_size, dtype, normalize_embeddings, max_length)
    if state.is_main_process:
        _check_manifest(parts, manifest)
    state.wait_for_everyone()
    done = {int(path.stem.removeprefix("part-")) for path in parts.glob("part-*.parquet")}

    def mine(index: int) -> bool:
        return index % state.num_processes == state.process_index

    model = tokenizer = None
    total = pq.ParquetFile(input_path).metadata.num_rows if input_format(input_path) == "parquet" else None
    bar = tqdm(
        total=total, unit="row", unit_scale=True, desc=task, disable=not (show_progress_bar and state.is_main_process)
    )
    started, tokens, num_shards, shards_run, rows_run = time.perf_counter(), 0, 0, 0, 0
    with bar:
        for index, _, decode in iter_shards(input_path, columns, shard_size):
            num_shards = index + 1
            if not mine(index) or index in done:
                continue
            shard = decode()
            if on_error == "raise":
                bad = next((i for i, error in enumerate(shard.errors) if error is not None), None)
                if bad is not None:
                    raise _bad_row_error(shard, bad)
            if model is None:  # loaded only when there is work left: resuming a finished run costs no load
                model, tokenizer = load_model(model_path, task, dtype, device or state.device)
                started = time.perf_counter()
            table, shard_tokens = process_shard(
                shard, task, model, tokenizer, columns, batch_size, normalize_embeddings, max_length
            )
            _write_atomically(table, _part_path(parts, shard.index))
            tokens += shard_tokens
            bar.set_postfix_str(f"{tokens / (time.perf_counter() - started):,.0f} tokens/s", refresh=False)
            bar.update(table.num_rows)
            shards_run, rows_run = shards_run + 1, rows_run + table.num_rows
    logger.info(f"rank {state.process_index} of {state.num_processes}: ran {shards_run} shards ({rows_run} rows)")
    state.wait_for_everyone()
    if not state.is_main_process:
        return BulkReport(output=None)
    if num_shards == 0:
        shutil.rmtree(parts)
        raise ValueError(f"{input_path} has no rows.")
    report = merge_parts(parts, num_shards, output)
    report.shards_resumed = len(done)
    return report
