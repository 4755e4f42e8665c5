# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Model cards for GemmaEncoder models: metadata, conversion settings, usage, results and the Gemma terms note.

Owns: rendering the card template (`templates/model_card.md`, linked from `model_cards/TEMPLATE.md`) from a model's
config and the results files written by `gemma-encoder evaluate`. `push_to_hub` and `gemma-encoder card` call it.
huggingface_hub does the card plumbing: `ModelCardData` writes the YAML front matter and turns `EvalResult`s into
`model-index` metadata; `ModelCard.from_template` renders the Jinja template.

Results files hold one JSON object or a list of them (see docs/hub.md):

    {"model": str, "task": "sst2", "dataset": {"name": "sst2", "split": "validation"}, "metrics": {"accuracy": 0.91}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from ..modeling.configuration_gemma_encoder import GemmaEncoderConfig
from ..modeling.modeling_gemma_encoder import attention_window

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"

# architecture -> (pipeline tag on the Hub, what the model does)
TASKS = {
    "GemmaEncoderForSequenceClassification": ("text-classification", "text and text-pair classification or regression"),
    "GemmaEncoderForRanking": ("text-ranking", "cross-encoder reranking of (query, document) pairs"),
    "GemmaEncoderModel": ("feature-extraction", "pooled text embeddings"),
    "GemmaEncoderForMaskedLM": ("fill-mask", "masked-token prediction (encoder adaptation of the decoder)"),
    "GemmaEncoderForTokenClassification": ("token-classification", "token classification (named entities, tagging)"),
    "GemmaEncoderForQuestionAnswering": ("question-answering", "extractive question answering (answer spans)"),
}

# Task names (GLUE) or dataset names (reranking folders, whose records say task="rerank") of our results files ->
# (Hub dataset id, config, readable name).
KNOWN_DATASETS = {
    "sst2": ("nyu-mll/glue", "sst2", "GLUE SST-2"),
    "cola": ("nyu-mll/glue", "cola", "GLUE CoLA"),
    "mrpc": ("nyu-mll/glue", "mrpc", "GLUE MRPC"),
    "rte": ("nyu-mll/glue", "rte", "GLUE RTE"),
    "stsb": ("nyu-mll/glue", "stsb", "GLUE STS-B"),
    "qnli": ("nyu-mll/glue", "qnli", "GLUE QNLI"),
    "scifact": ("BeIR/scifact", None, "BEIR SciFact (BM25 top-100 reranking)"),
    "msmarco-dl19-subset": ("microsoft/ms_marco", None, "TREC DL 2019 passages, subset (BM25 top-100 reranking)"),
    "conll2003": ("eriktks/conll2003", None, "CoNLL-2003 English NER (entity-level, seqeval)"),
    "squad": ("rajpurkar/squad", None, "SQuAD v1.1 (exact match / F1)"),
}

GENERATIONS = {
    "gemma": "Gemma 1",
    "gemma2": "Gemma 2",
    "gemma3_text": "Gemma 3 (text)",
    "gemma4_text": "Gemma 4 (text)",
    "t5gemma": "T5Gemma (encoder)",
    "t5gemma2": "T5Gemma 2 (text encoder)",
    "embedding_gemma2_text": "EmbeddingGemma 2 (text tower)",
    "recurrent_gemma": "RecurrentGemma",
}


# ----------------------------------------------------------------------------------------------------------------------
# Results files
# ----------------------------------------------------------------------------------------------------------------------


def _check_record(record, source: str) -> dict:
    if not isinstance(record, dict):
        raise ValueError(f"{source}: a results record must be a JSON object, got {type(record).__name__}.")
    missing = [key for key in ("task", "dataset", "metrics") if key not in record]
    if missing:
        raise ValueError(
            f"{source}: results record lacks {missing}; expected "
            '{"task": ..., "dataset": {"name": ..., "split": ...}, "metrics": {"name": number}} '
            "as written by `gemma-encoder evaluate --out`."
        )
    metrics = record["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"{source}: 'metrics' must be a non-empty object of metric name -> number.")
    bad = [name for name, value in metrics.items() if isinstance(value, bool) or not isinstance(value, (int, float))]
    if bad:
        raise ValueError(f"{source}: metrics {bad} are not numbers.")
    dataset = record["dataset"]
    if isinstance(dataset, str):
        dataset = {"name": dataset}
    if not isinstance(dataset, dict) or not dataset.get("name"):
        raise ValueError(f"{source}: 'dataset' must be a name or an object with a 'name'.")
    return {**record, "dataset": dataset}


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Read results files (one record or a list of records each) and check every record's shape."""
    records = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}).") from err
        for record in data if isinstance(data, list) else [data]:
            records.append(_check_record(record, str(path)))
    return records


def eval_results(records: Sequence[dict], task_type: str) -> list[EvalResult]:
    """One `EvalResult` (a `model-index` entry) per metric of every record."""
    results = []
    for record in records:
        record = _check_record(record, "results")
        task = record["task"]
        dataset = record["dataset"]
        known = KNOWN_DATASETS.get(task) or KNOWN_DATASETS.get(dataset["name"])
        dataset_id, dataset_config, pretty = known or (dataset["name"], None, dataset["name"])
        for metric, value in record["metrics"].items():
            results.append(
                EvalResult(
                    task_type=record.get("task_type", task_type),
                    dataset_type=dataset_id,
                    dataset_name=pretty,
                    dataset_config=dataset_config,
                    dataset_split=dataset.get("split"),
                    metric_type=metric,
                    metric_value=round(float(value), 4),
                )
            )
    return results


def _results_table(results: Sequence[EvalResult]) -> str:
    if not results:
        return "No evaluation results were recorded for this model."
    rows = ["| Dataset | Split | Metric | Value |", "|---|---|---|---|"]
    for result in results:
        split = result.dataset_split or "-"
        rows.append(f"| {result.dataset_name} | {split} | {result.metric_type} | {result.metric_value:.4f} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------------------
# Card content
# ----------------------------------------------------------------------------------------------------------------------


def usage_snippet(architecture: str, model_id: str) -> str:
    """Python code that loads the model from `model_id` with trust_remote_code and runs it; tested to run.

    AutoTokenizer gets `trust_remote_code=True` too: it reads the repo's config, whose `auto_map` points at custom
    code, and without the flag transformers stops to ask (a 15 s prompt in a terminal) before falling back.
    """
    model_id = json.dumps(model_id)
    if architecture == "GemmaEncoderForSequenceClassification":
        return f"""from transformers import pipeline

classifier = pipeline("text-classification", model={model_id}, trust_remote_code=True)
print(classifier("A charming and often affecting journey."))
# Sentence pairs (NLI, paraphrase, similarity): pass a dict, the tokenizer joins it as <bos> text <eos> text_pair.
print(classifier({{"text": "A man is playing a guitar.", "text_pair": "Someone is making music."}}))"""
    if architecture == "GemmaEncoderForRanking":
        return f"""import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({model_id}, trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained({model_id}, trust_remote_code=True).eval()

query = "Which gas do plants absorb for photosynthesis?"
documents = ["Plants take in carbon dioxide and release oxygen.", "The Eiffel Tower is in Paris."]
batch = tokenizer([query] * len(documents), documents, padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    scores = model(**batch).logits[:, 0]  # one relevance score per (query, document)
for score, document in sorted(zip(scores.tolist(), documents), reverse=True):
    print(f"{{score:8.3f}}  {{document}}")"""
    if architecture == "GemmaEncoderForTokenClassification":
        return f"""from transformers import pipeline

tagger = pipeline("token-classification", model={model_id}, trust_remote_code=True, aggregation_strategy="simple")
print(tagger("Angela Müller flew from Hamburg to São Paulo with Lufthansa."))
# With gemma-encoder-hf installed, its pipeline class also trims the space Gemma's pieces carry from each entity:
# pipeline(..., pipeline_class=gemma_encoder_hf.GemmaEncoderTokenClassificationPipeline)"""
    if architecture == "GemmaEncoderForQuestionAnswering":
        return f"""import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({model_id}, trust_remote_code=True)
model = AutoModelForQuestionAnswering.from_pretrained({model_id}, trust_remote_code=True).eval()

question, context = "Where did Angela fly to?", "Angela Müller flew from Hamburg to São Paulo."
batch = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
offsets = batch.pop("offset_mapping")[0]
with torch.no_grad():
    out = model(**batch)
context_tokens = torch.tensor([segment == 1 for segment in batch.sequence_ids(0)])  # None: special tokens
start = out.start_logits[0].masked_fill(~context_tokens, -1e9).argmax()
end = start + out.end_logits[0, start:].masked_fill(~context_tokens[start:], -1e9).argmax()
print(context[offsets[start][0] : offsets[end][1]].strip())
# With gemma-encoder-hf installed: pipeline("extractive-question-answering", model=...) (long contexts, doc stride)"""
    return f"""import torch
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({model_id}, trust_remote_code=True)
model = AutoModel.from_pretrained({model_id}, trust_remote_code=True).eval()

texts = ["A charming and often affecting journey.", "Unflinchingly bleak."]
batch = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    embeddings = model(**batch).pooler_output  # one pooled vector per text (the config's pooling)
print(embeddings.shape)"""


PAIR_NOTE = (
    "Text pairs are encoded as `<bos> text <eos> text_pair` (the tokenizer saved here does it; Gemma's own tokenizer "
    "would write `<bos> text <bos> text_pair`)."
)


def _pooling_text(config: GemmaEncoderConfig) -> str:
    if config.pooling == "mean":
        return "mean over real tokens"
    if config.pooling in ("first", "last"):
        return f"{config.pooling}-K (mean of the {config.pooling} {config.pooling_k} real token(s))"
    return (
        f"attention pooling, {config.attention_pooling_probe}-probe ({config.attention_pooling_num_probes} probes, "
        f"{config.attention_pooling_num_heads} heads)"
    )


def _attention_text(config: GemmaEncoderConfig) -> str:
    if config.attention == "causal":
        return "causal (the decoder's own mask)"
    text = "bidirectional"
    if config.bidirectional_layers is not None:
        text += (
            f" in the top {config.bidirectional_layers} of {config.num_hidden_layers} layers, the decoder's causal "
            f"mask below them (`bidirectional_layers={config.bidirectional_layers}`)"
        )
    if "sliding_attention" in config.layer_types:
        left, right = attention_window(config, "sliding_attention", causal=False)
        if left < 0:
            window = "the whole sequence"
        else:
            window = f"±{left} tokens" if left == right else f"{left} tokens before, {right} after"
        text += f"; sliding-window layers see {window} (`bidirectional_window={config.bidirectional_window}`)"
    if "linear_attention" in config.layer_types:
        text += (
            f"; recurrent layers run over the text and over the reversed text (`recurrence_combine="
            f"{config.recurrence_combine}`, `recurrence_reverse_weights={config.recurrence_reverse_weights}`)"
        )
    return text


def _head_text(config: GemmaEncoderConfig, num_outputs: int) -> str:
    width = config.hidden_size if config.classifier_hidden_size is None else config.classifier_hidden_size
    if not width:
        return f"dropout → linear {config.hidden_size}→{num_outputs}"
    return (
        f"dropout → linear {config.hidden_size}→{width} → {config.classifier_activation} → dropout → "
        f"linear {width}→{num_outputs}"
    )


def conversion_settings(config: GemmaEncoderConfig, architecture: str) -> list[tuple[str, str]]:
    """(setting, value) rows describing how the decoder became this encoder."""
    rows = [
        ("Decoder generation", GENERATIONS.get(config.decoder_model_type, str(config.decoder_model_type))),
        ("Attention", _attention_text(config)),
        ("Pooling", _pooling_text(config)),
        (
            "Dropout (attention / hidden / classifier)",
            f"{config.attention_dropout} / {config.hidden_dropout} / {config.classifier_dropout}",
        ),
    ]
    if architecture == "GemmaEncoderForSequenceClassification":
        rows.append(("Head", _head_text(config, config.num_labels)))
        labels = ", ".join(f"{i}: {name}" for i, name in sorted(config.id2label.items()))
        problem = f" (`problem_type={config.problem_type}`)" if config.problem_type else ""
        rows.append(("Labels", labels + problem))
    elif architecture == "GemmaEncoderForTokenClassification":
        rows.append(("Head (per token)", _head_text(config, config.num_labels)))
        rows.append(("Labels", ", ".join(f"{i}: {name}" for i, name in sorted(config.id2label.items()))))
    elif architecture == "GemmaEncoderForQuestionAnswering":
        rows.append(("Head (per token)", _head_text(config, 2) + " (answer start and end scores)"))
    elif architecture == "GemmaEncoderForRanking":
        rows.append(("Head", _head_text(config, 1)))
        rows.append(("Ranking loss", f"{config.ranking_loss} (groups of {config.ranking_group_size} documents)"))
    if getattr(config, "dtype", None) is not None:
        rows.append(("Weights dtype", str(config.dtype).removeprefix("torch.")))
    return rows


def _attention_note(config: GemmaEncoderConfig) -> str:
    if config.attention == "causal":
        return (
            "Attention stays causal, as in pretraining: a token sees only the tokens before it, so what the pooled "
            "vector captures depends on the pooling (the last tokens have seen the whole text)."
        )
    return (
        "The backbone was pretrained as a causal decoder and runs here with bidirectional attention: a distribution "
        "shift that a short fine-tune does not fully absorb, so compare against the results below before relying "
        "on it."
    )


def _intended_use(architecture: str) -> str:
    return {
        "GemmaEncoderForSequenceClassification": (
            "Classifying (or scoring, for regression) single texts and text pairs in the domain and label set it "
            "was fine-tuned on. It is a starting point for further fine-tuning on similar tasks."
        ),
        "GemmaEncoderForRanking": (
            "Reranking a first-stage retriever's candidates (e.g. BM25 top-100): score every (query, document) pair "
            "and sort. Scores are comparable within a query, not calibrated probabilities across queries. "
            "sentence-transformers' `CrossEncoder` loads it too."
        ),
        "GemmaEncoderForMaskedLM": (
            "An intermediate checkpoint: the decoder adapted to bidirectional attention by masked-token training, "
            "meant to be fine-tuned (AutoModelForSequenceClassification) or used for embeddings (AutoModel)."
        ),
    }.get(
        architecture,
        "Text embeddings (the `pooler_output`) for similarity, clustering or as features, and a backbone to "
        "fine-tune with AutoModelForSequenceClassification. It has not been trained for any task by itself.",
    )


def _summary(config: GemmaEncoderConfig, architecture: str, task_text: str, base_text: str) -> str:
    kind = "A bidirectional encoder" if config.attention == "bidirectional" else "An encoder (causal attention)"
    mask = "made bidirectional" if config.attention == "bidirectional" else "kept causal"
    head = {
        "GemmaEncoderModel": "a pooler on top",
        "GemmaEncoderForMaskedLM": "the tied vocabulary head for masked-token prediction",
    }.get(architecture, "a pooler and a task head on top")
    return (
        f"{kind} for {task_text}, converted from {base_text} with gemma-encoder-hf: the decoder's weights, its "
        f"attention mask {mask}, and {head}."
    )


def _count_parameters(model_dir: Path) -> int | None:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                shape = handle.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def _format_count(count: int | None) -> str:
    if count is None:
        return "unknown"
    if count < 1e6:
        return f"{count:,}"
    return f"{count / 1e6:,.0f}M" if count < 1e9 else f"{count / 1e9:,.2f}B"


def build_model_card(
    config: GemmaEncoderConfig,
    *,
    model_id: str,
    base_model: str | None = None,
    results: Sequence[dict] = (),
    training_data: Sequence[str] = (),
    num_parameters: int | None = None,
    language: str | list[str] | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """Render the card of a saved or about-to-be-pushed model.

    Args:
        config: the model's config; `config.architectures` (set by `save_pretrained`) picks the task.
        model_id: the Hub repo id (or local folder) the usage snippet loads.
        base_model: Hub id of the decoder it was converted from, e.g. "google/gemma-3-270m" (the config does not
            record it). Becomes `base_model` metadata, which links the card to the Gemma model on the Hub.
        results: records as read by `load_results` (become `model-index` metadata and a table).
        training_data: datasets the model was fine-tuned on (Hub ids or short descriptions).
        num_parameters: shown in the details table.
        language, tags: extra metadata.
    """
    if not isinstance(config, GemmaEncoderConfig):
        raise TypeError(f"build_model_card needs a GemmaEncoderConfig, got {type(config).__name__}.")
    architecture = (config.architectures or ["GemmaEncoderModel"])[0]
    if architecture not in TASKS:
        raise ValueError(f"No model card recipe for architecture {architecture!r}; known: {sorted(TASKS)}.")
    pipeline_tag, task_text = TASKS[architecture]
    title = model_id.rstrip("/").split("/")[-1]
    evals = eval_results(results, pipeline_tag)
    card_data = ModelCardData(
        base_model=base_model,
        license="gemma",
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        language=language,
        datasets=list(training_data) or None,
        tags=["gemma-encoder", "gemma_encoder", "custom_code", *tags],
        model_name=title if evals else None,
        eval_results=evals or None,
    )
    generation = GENERATIONS.get(config.decoder_model_type, "Gemma")
    base_text = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else f"a {generation} decoder"
    training_text = (
        "\n".join(f"- {item}" for item in training_data)
        if training_data
        else "Not recorded: the backbone is the decoder's pretrained weights; see the base model's card."
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        title=title,
        summary=_summary(config, architecture, task_text, base_text),
        usage=usage_snippet(architecture, model_id),
        pair_note=PAIR_NOTE,
        base_model_text=base_text,
        architecture=architecture,
        task_text=task_text,
        num_parameters=_format_count(num_parameters),
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        max_length=config.max_position_embeddings,
        settings=conversion_settings(config, architecture),
        attention_note=_attention_note(config),
        intended_use=_intended_use(architecture),
        training_data_text=training_text,
        results_table=_results_table(evals),
    )


def write_model_card(
    model_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    model_id: str | None = None,
    results_files: Sequence[str | os.PathLike] = (),
    **card_kwargs,
) -> Path:
    """Render the card of the model saved in `model_dir` to `out` (default: `model_dir/README.md`)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json; point at a folder written by save_pretrained.")
    config = GemmaEncoderConfig.from_pretrained(model_dir)
    card = build_model_card(
        config,
        model_id=model_id or str(model_dir),
        results=load_results(results_files),
        num_parameters=_count_parameters(model_dir),
        **card_kwargs,
    )
    out = Path(out) if out is not None else model_dir / "README.md"
    card.save(out)
    return out
