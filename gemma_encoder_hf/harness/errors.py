# Copyright 2026 The gemma-encoder-hf authors. Licensed under the Apache License, Version 2.0.
"""Errors that name the argument they are about.

Library functions raise them in library terms (the parameter name, e.g. `column`); a command line that called the
function maps `argument` to its own flag (e.g. `--column`) when it prints the error. They are ordinary `ValueError`s
(and `FileNotFoundError`s), so callers that catch those keep working.
"""


class InvalidArgumentError(ValueError):
    """A bad value of the argument named `argument` (a parameter name of the function that raised it)."""

    def __init__(self, argument: str, message: str):
        super().__init__(message)
        self.argument = argument


class PathNotFoundError(InvalidArgumentError, FileNotFoundError):
    """The argument named `argument` points at a file or folder that does not exist."""
