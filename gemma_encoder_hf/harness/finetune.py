# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""`gemma-encoder finetune`: one task name -> data, model, Trainer fine-tuning, saved model and results file.

Owns: the per-task wiring (which loader, which model class, which split is scored) for the token-level tasks
(`conll2003`, `squad`) and the GLUE tasks. Defaults with no tuning flags are each task's recipe (`RECIPES` in
`token_tasks`, `GLUE_RECIPES` in `glue`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..modeling.modeling_gemma_encoder import (
    GemmaEncoderForQuestionAnswering,
    GemmaEncoderForTokenClassification,
)
from .adaptation import adapt
from .data import GLUE_TASKS, resolve_data_root
from .evaluation import results_record, write_results
from .token_tasks import (
    CONLL_FILES,
    RECIPES,
    SQUAD_FILE,
    adaptation_texts,
    conll_label_kwargs,
    finetune_ner,
    finetune_qa,
    load_conll,
    load_squad,
    split_by_article,
)
from .training import TrainingConfig, capped_bidirectional_layers, encoder_dir, load_task_model

# Training subsets are drawn with this fixed seed, independent of the run's seed, so that different budgets and seeds
# see nested, comparable subsets.
SUBSET_SEED = 0


def _first(dataset, n: int | None):
    if n is None or n >= len(dataset):
        return dataset
    if n < 1:
        raise ValueError(f"--train-examples must be at least 1, got {n}.")
    return dataset.shuffle(seed=SUBSET_SEED).select(range(n))


def _head(dataset, n: int | None):
    return dataset if n is None else dataset.select(range(min(n, len(dataset))))


def _bidirectional_layers(given: int | None, recipe_layers: int | None, attention: str, task: str) -> int | None:
    """The top layers that attend both ways. Given (0: every layer): a ValueError under causal attention, given or
    CoLA's recipe, where the count would sit in the config and change nothing. Not given: the recipe's, or none under
    causal attention (`--attention causal` on a recipe with bidirectional top layers), so that neither the saved
    config nor the results record claims layers that attend both ways."""
    if given is None:
        return recipe_layers if attention == "bidirectional" else None
    if attention != "bidirectional":
        raise ValueError(
            f"bidirectional_layers={given} turns the top layers of a bidirectional encoder, but {task} runs with "
            f"attention={attention!r}; pass attention='bidirectional' (--attention bidirectional) with it."
        )
    return given or None


def finetune_task(
    task: str,
    source: str | Path,
    output_dir: str | Path,
    *,
    train_examples: int | None = None,
    eval_examples: int | None = None,
    data: str | Path | None = None,
    epochs: float | None = None,
    learning_rate: float | None = None,
    layer_lr_decay: float | None = None,
    batch_size: int | None = None,
    max_length: int | None = None,
    attention: str | None = None,
    bidirectional_layers: int | None = None,
    adapt_steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    cache_dir: str | Path = "runs/converted",
    show_progress_bar: bool = True,
) -> dict:
    """Fine-tune `source` on `task`, save model + tokenizer + `results.json` to `output_dir`; return the record.

    conll2003: trains on `train.jsonl` (a seeded random subset of `train_examples` sentences), scores entity F1 on the
    shared `validation.jsonl`. squad: splits the shared questions by article (`split_by_article`, seed 0), trains on
    the training articles, scores EM/F1 on the validation articles. GLUE tasks run `harness.glue.run_glue` with the
    task's recipe (`GLUE_RECIPES`; the flags given here replace its fields), scored on the dev-shaped validation
    split; the model then goes to `output_dir/model`. `data` is the data root or the task's training file.
    `layer_lr_decay`: each decoder layer's learning rate is scaled by this per layer above it
    (`TrainingConfig.layer_lr_decay`); None keeps the recipe's (SST-2: 0.9, every other task: 1.0, no decay).
    `eval_examples` scores only the first N validation rows (the rows `gemma-encoder evaluate --max-examples N`
    scores for the token tasks). `adapt_steps`: masked-next-token steps on unlabelled text before fine-tuning
    (token tasks: the training examples' text, `adaptation_texts`; GLUE: the whole training split's); the adapted
    encoder goes to `output_dir/adapted`. None keeps the recipe's, 0 skips the stage. `bidirectional_layers`: only
    the top N layers attend both ways (`GemmaEncoderConfig.bidirectional_layers`); None keeps the recipe's (none
    with `attention="causal"`), 0 turns every layer bidirectional; a ValueError when the attention is causal (given,
    or CoLA's recipe).
    """
    task = task.lower()
    output_dir = Path(output_dir)
    root_given = data if data is not None and Path(data).is_dir() else None
    if task in GLUE_TASKS:
        # GLUE tasks run their own recipe (adaptation, pooling, warm-up per task); flags given here replace its fields.
        from .glue import GLUE_RECIPES, run_glue

        if eval_examples is not None:
            raise ValueError("eval_examples is for the token tasks; a GLUE task is scored on its whole validation split.")
        given = dict(epochs=epochs, learning_rate=learning_rate, layer_lr_decay=layer_lr_decay, batch_size=batch_size,
                     max_length=max_length, attention=attention, adapt_steps=adapt_steps)  # fmt: skip
        recipe = dataclasses.replace(GLUE_RECIPES[task], **{k: v for k, v in given.items() if v is not None})
        layers = _bidirectional_layers(bidirectional_layers, recipe.bidirectional_layers, recipe.attention, task)
        recipe = dataclasses.replace(recipe, bidirectional_layers=layers)
        return run_glue(
            task, source, output_dir, train_examples, recipe=recipe, data_root=root_given, seed=seed, device=device,
            cache_dir=cache_dir, show_progress_bar=show_progress_bar,
        )  # fmt: skip
    if task not in RECIPES:
        raise ValueError(f"Unknown task {task!r}; known: {sorted([*RECIPES, *GLUE_TASKS])}.")
    recipe = RECIPES[task]
    root = resolve_data_root(root_given)
    defaults = TrainingConfig()
    config = TrainingConfig(
        output_dir=output_dir / "checkpoints",
        epochs=epochs if epochs is not None else recipe.epochs,
        batch_size=batch_size or recipe.batch_size,
        learning_rate=learning_rate or defaults.learning_rate,
        layer_lr_decay=defaults.layer_lr_decay if layer_lr_decay is None else layer_lr_decay,
        max_length=max_length or recipe.max_length,
        seed=seed,
        checkpoints=False,
        device=device,
        show_progress_bar=show_progress_bar,
    )
    attention = attention or recipe.attention
    adapt_steps = recipe.adapt_steps if adapt_steps is None else adapt_steps
    bidirectional_layers = _bidirectional_layers(bidirectional_layers, recipe.bidirectional_layers, attention, task)

    if task == "conll2003":
        train_file = Path(data) if data is not None and Path(data).is_file() else root / CONLL_FILES["train"]
        train = _first(load_conll(train_file), train_examples)
        validation = _head(load_conll(root / CONLL_FILES["validation"]), eval_examples)
        model_class, labels, finetune = GemmaEncoderForTokenClassification, conll_label_kwargs(), finetune_ner
        split, path = "validation", root / CONLL_FILES["validation"]
    else:
        squad_file = Path(data) if data is not None and Path(data).is_file() else root / SQUAD_FILE
        train, validation = split_by_article(load_squad(squad_file), seed=SUBSET_SEED)
        train, validation = _first(train, train_examples), _head(validation, eval_examples)
        model_class, labels, finetune = GemmaEncoderForQuestionAnswering, {}, finetune_qa
        split, path = f"validation-articles(seed={SUBSET_SEED})", squad_file
    source = encoder_dir(source, cache_dir)
    bidirectional_layers = capped_bidirectional_layers(source, bidirectional_layers)
    if adapt_steps > 0:
        # Adapted with the attention the fine-tune will use: MNTP trains the layers that turn bidirectional.
        source = adapt(source, adaptation_texts(task, train), output_dir / "adapted", steps=adapt_steps, seed=seed,
                       attention=attention, bidirectional_layers=bidirectional_layers, device=device)  # fmt: skip
    model, tokenizer = load_task_model(model_class, source, cache_dir=cache_dir, seed=seed, attention=attention,
                                       bidirectional_layers=bidirectional_layers, **labels)  # fmt: skip
    result = finetune(model, tokenizer, train, validation, config)
    result.model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record = results_record(
        model=str(output_dir), task=task, dataset_name=task, split=split, path=str(path), metrics=result.metrics,
        config=result.model.config,
    )
    # Kept out of `metrics`, which model cards publish as model-index entries.
    record["training"] = {
        "train_examples": len(train), "epochs": config.epochs, "batch_size": config.batch_size,
        "learning_rate": config.learning_rate, "head_learning_rate": config.head_learning_rate,
        "layer_lr_decay": config.layer_lr_decay,
        "max_length": config.max_length, "attention": attention, "bidirectional_layers": bidirectional_layers,
        "adapt_steps": adapt_steps, "seed": seed,
        "train_seconds": round(result.train_seconds, 1),
    }  # fmt: skip
    write_results(output_dir / "results.json", record)
    return record
