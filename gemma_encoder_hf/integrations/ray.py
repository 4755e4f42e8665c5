# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Bulk inference on a Ray cluster: Ray Data streams the rows, a pool of actors each holding the model maps the
batches (`map_batches` with an actor pool). Install with `pip install gemma-encoder-hf[ray]`.

Owns: the actor that runs `embed` / `classify` / `score` on Ray Data batches. The per-batch work is the one
`gemma_encoder_hf.harness.bulk` does per shard (length-sorted batches, the same output columns and bad-row policy), so
a Ray run gives the in-process run's numbers.

    import ray
    from gemma_encoder_hf.harness.bulk import Columns
    from gemma_encoder_hf.integrations.ray import map_bulk

    rows = ray.data.read_parquet("s3://bucket/docs/")
    embedded = map_bulk(rows, "embed", "my-encoder", Columns(text="body", id="doc_id"), concurrency=8, num_gpus=1)
    embedded.write_parquet("s3://bucket/embeddings/")

Ray Data does not number rows, so the rows need an id column (`Columns.id`) to be matched with their results.
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..harness.bulk import Columns, _bad_row_error, _decode, load_model, process_shard

try:
    import ray
    import ray.data
except ImportError as err:  # an optional extra: say how to get it
    raise ImportError("The Ray path needs Ray Data: pip install 'gemma-encoder-hf[ray]'.") from err


class BulkPredictor:
    """A Ray Data actor: loads the model once, then maps pyarrow batches to output tables."""

    def __init__(
        self,
        task: str,
        model_path: str,
        columns: Columns,
        batch_size: int,
        dtype: str,
        device: str,
        on_error: str,
        normalize_embeddings: bool,
        max_length: int | None,
    ):
        self.task, self.columns, self.batch_size, self.on_error = task, columns, batch_size, on_error
        self.normalize_embeddings, self.max_length = normalize_embeddings, max_length
        self.model, self.tokenizer = load_model(model_path, task, dtype, device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        shard = _decode(batch, index=0, start=0, columns=self.columns)
        if self.on_error == "raise":
            bad = next((i for i, error in enumerate(shard.errors) if error is not None), None)
            if bad is not None:
                raise _bad_row_error(shard, bad)
        table, _ = process_shard(
            shard, self.task, self.model, self.tokenizer, self.columns, self.batch_size, self.normalize_embeddings,
            self.max_length,
        )  # fmt: skip
        return table


def map_bulk(
    dataset: "ray.data.Dataset",
    task: str,
    model_path: str | Path,
    columns: Columns,
    *,
    window: int = 10_000,
    batch_size: int = 32,
    dtype: str = "fp32",
    device: str = "cpu",
    on_error: str = "raise",
    normalize_embeddings: bool = False,
    max_length: int | None = None,
    concurrency: int = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
) -> "ray.data.Dataset":
    """`dataset` mapped to the output rows of `task` (lazy, like every Ray Data transform).

    Args:
        window: rows per Ray Data batch: the length-sorting window (`shard_size` of the in-process path).
        concurrency: actors in the pool (each holds one copy of the model).
        num_cpus: CPUs each actor reserves. Leave Ray some for reading: actors holding every CPU starve the read
            tasks that feed them, and the run waits forever.
        num_gpus: GPUs per actor (then pass device="cuda").
        The others: as `gemma_encoder_hf.harness.bulk.run_bulk`.
    """
    if columns.id is None:
        raise ValueError("Ray Data does not number rows: name an id column (Columns(id=...)) to match the results.")
    return dataset.map_batches(
        BulkPredictor,
        fn_constructor_kwargs=dict(
            task=task, model_path=str(model_path), columns=columns, batch_size=batch_size, dtype=dtype, device=device,
            on_error=on_error, normalize_embeddings=normalize_embeddings, max_length=max_length,
        ),
        batch_size=window,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )  # fmt: skip


def read_input(path: str | Path, columns: Columns) -> "ray.data.Dataset":
    """A JSONL, CSV/TSV or Parquet file (or folder of them) as a Ray Dataset of the needed columns."""
    path = str(path)
    names = columns.names()
    if path.endswith(".parquet"):
        return ray.data.read_parquet(path, columns=names)
    if path.endswith((".jsonl", ".ndjson")):
        return ray.data.read_json(path, lines=True).select_columns(names)
    if path.endswith((".csv", ".tsv")):
        from pyarrow import csv

        parse = csv.ParseOptions(delimiter="\t", quote_char=False) if path.endswith(".tsv") else None
        convert = csv.ConvertOptions(include_columns=names, column_types={columns.id: pa.string()})
        return ray.data.read_csv(path, parse_options=parse, convert_options=convert)
    raise ValueError(f"cannot read {path}: the input must end in .jsonl, .ndjson, .csv, .tsv or .parquet.")


def run_ray(
    task: str, model_path: str | Path, input_path: str | Path, output_path: str | Path, columns: Columns, **kwargs
) -> Path:
    """Read `input_path`, map it with `map_bulk` (keyword arguments as there) and write one Parquet file in input
    order. Ray must be initialised (`ray.init(...)`); on a cluster, write with `map_bulk(...).write_parquet` instead
    of funnelling every row through the driver."""
    context = ray.data.DataContext.get_current()
    preserve_order = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # the output rows in input order
    try:
        writer = None
        for table in map_bulk(read_input(input_path, columns), task, model_path, columns, **kwargs).iter_batches(
            batch_size=None, batch_format="pyarrow"
        ):
            if writer is None:
                writer = pq.ParquetWriter(output_path, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
    finally:
        context.execution_options.preserve_order = preserve_order
    return Path(output_path)


__all__ = ["BulkPredictor", "map_bulk", "read_input", "run_ray"]
