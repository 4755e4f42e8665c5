# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""The `gemma-encoder` command. Each subcommand parses its arguments and calls one library function."""

import argparse
import json
import logging
import sys

from .configuration_gemma_encoder import ATTENTION_TYPES, POOLING_TYPES


def _parse_value(text: str):
    """CLI override values: JSON when it parses (numbers, booleans, null, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    for name in ("attention", "pooling", "num_labels"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = _parse_value(value)
    return overrides


def _cmd_convert(args: argparse.Namespace) -> None:
    from .conversion import convert

    out = convert(args.source, args.output_dir, task=args.task, **_overrides(args))
    print(f"wrote {args.task} encoder to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemma-encoder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="convert a Gemma decoder (folder, Hub id, GGUF, 'embedded') to an encoder")
    convert.add_argument("source", help="decoder folder, Hub id, .gguf file, or 'embedded' (Gemma 3 270M from PyPI)")
    convert.add_argument("output_dir")
    convert.add_argument("--task", choices=("base", "classification", "ranking", "masked-lm"), default="base")
    convert.add_argument("--attention", choices=ATTENTION_TYPES)
    convert.add_argument("--pooling", choices=POOLING_TYPES)
    convert.add_argument("--num-labels", type=int, dest="num_labels")
    convert.add_argument("--set", action="append", metavar="KEY=VALUE", help="any GemmaEncoderConfig field")
    convert.set_defaults(func=_cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"gemma-encoder {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
