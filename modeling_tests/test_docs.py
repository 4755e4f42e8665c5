"""The docs checked against the code: every Python snippet compiles and every `gemma_encoder_hf` name it (or the
prose) uses exists, every flag of a documented command exists, and every repository path the docs name exists.

Cheap on purpose (no model runs): the paths that the documented commands write are checked where those commands run,
in test_tasks.py (`test_finetune_glue_example_writes_what_the_docs_say`).
"""

import ast
import importlib
import re
import shlex
from pathlib import Path

import pytest

from gemma_encoder_hf.harness.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", REPO / "model_cards" / "README.md", *(REPO / "docs").glob("*.md")])
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Top-level folders of the repository: a backticked path starting with one of them must exist.
REPO_DIRS = ("gemma_encoder_hf/", "examples/", "benchmarks/", "docs/", "model_cards/", "modeling_tests/", ".ci/")


def blocks(language: str) -> list[tuple[str, str]]:
    return [(doc.name, code) for doc in DOCS for lang, code in FENCE.findall(doc.read_text()) if lang == language]


def source_of(module: str) -> Path | None:
    path = REPO.joinpath(*module.split("."))
    return next((file for file in (path.with_suffix(".py"), path / "__init__.py") if file.is_file()), None)


def defined_names(module: str) -> set[str]:
    """Top-level names a package module defines, read from its source without importing it."""
    names = set()
    for node in ast.parse(source_of(module).read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
    return names


def resolve(dotted: str):
    """Import the longest module prefix of `dotted` and getattr the rest; raises if any part is missing.

    A module that needs an optional extra which is not installed (its import raises ImportError, e.g. the Ray path
    without `[ray]`) is read instead: the next part must be one of its top-level definitions."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module)
        except ImportError:  # no such module, or one whose optional dependency is missing
            if source_of(module) is None:
                continue
            if parts[cut:] and parts[cut] not in defined_names(module):
                raise AttributeError(f"{module} defines no {parts[cut]}") from None
            return module
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def package_names(code: str) -> set[str]:
    """Dotted `gemma_encoder_hf...` names a snippet imports or uses as attributes."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gemma_encoder_hf"):
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("gemma_encoder_hf"))
        elif isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id == "gemma_encoder_hf":
                names.add(".".join(["gemma_encoder_hf", *reversed(chain)]))
    return names


@pytest.mark.parametrize("doc,code", blocks("python"), ids=lambda value: value if value.endswith(".md") else "")
def test_python_snippets_compile_and_use_existing_names(doc, code):
    compile(code, doc, "exec")
    for name in package_names(code):
        resolve(name)


def test_package_names_in_the_prose_exist():
    missing = []
    for doc in DOCS:
        for name in set(re.findall(r"`(gemma_encoder_hf(?:\.\w+)+)", doc.read_text())):
            try:
                resolve(name)
            except (ImportError, AttributeError):
                missing.append(f"{doc.name}: {name}")
    assert not missing, missing


def test_repository_paths_in_the_docs_exist():
    """Paths are relative to the repository or to the doc's folder; `perf_<tag>.json`-style patterns are skipped, and a
    benchmark's `--out PREFIX` counts as existing when the PREFIX.json it writes does."""
    pattern = re.compile(r"[`(\[\s]((?:%s)[\w./-]*\w)(?![\w<])" % "|".join(map(re.escape, REPO_DIRS)))
    missing = []
    for doc in DOCS:
        for path in set(pattern.findall(doc.read_text())):
            if not any((root / name).exists() for root in (REPO, doc.parent) for name in (path, f"{path}.json")):
                missing.append(f"{doc.relative_to(REPO)}: {path}")
    assert not missing, missing


def commands() -> list[tuple[str, list[str]]]:
    """Shell commands of the docs' bash blocks (continuation lines joined), as token lists."""
    found = []
    for doc, code in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.commenters = "#"
            lexer.wordchars += "-=@:/.,$"
            tokens, command = list(lexer), []
            for token in [*tokens, ";"]:
                if token not in ("&&", ";", "|", "||"):
                    command.append(token)
                    continue
                if command[:1] == ["gemma-encoder"] or command[:1] == ["python"] and command[1:2] and \
                        command[1].endswith(".py"):
                    found.append((doc, command))
                command = []
    return found


def test_documented_command_flags_exist():
    """`--lr`, `--cpu`, `--head-lr` and friends were renamed; the docs must not keep the old spellings."""
    cli = build_parser()
    subcommands = next(a for a in cli._actions if a.dest == "command").choices
    unknown = []
    for doc, tokens in commands():
        flags = {t.split("=")[0] for t in tokens if t.startswith("--")}
        if tokens[0] == "gemma-encoder":
            known = set(subcommands[tokens[1]]._option_string_actions)
        else:
            script = (REPO / tokens[1]).read_text()
            known = {flag for flag in flags if f'"{flag}"' in script or f"'{flag}'" in script} | {"--help"}
            # BooleanOptionalAction adds --no-X for --X.
            known |= {flag for flag in flags if flag.startswith("--no-") and f'"--{flag[5:]}"' in script}
        unknown += [f"{doc}: {' '.join(tokens[:2])} {flag}" for flag in sorted(flags - known)]
    assert not unknown, unknown
