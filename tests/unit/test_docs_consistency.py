"""The docs and the code name the same things: every variable, flag and port the docs mention exists,
every setting and default port is documented, and every code block says whether a test runs it.

Variables: the platform's own prefixes (``WORKER_``, ``GATEWAY_``, ``REGISTRY_``, ``MODEL_REGISTRY_``,
``MODEL_SERVICE_``, ``MINIO_``) and the seed's ``MODEL_*`` names; a name exists when a settings class
reads it (prefix + field, or an alias) or a project file outside the docs spells it (scripts, compose
files, templates). Flags: every ``model-service ...`` command written in the docs is parsed with the
real CLI parser, so a renamed or removed flag fails here.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from stack.cli import build_parser
from tests.helpers.doc_blocks import ROOT, all_blocks, doc_files

SETTINGS_MODULES = ("common.settings", "common.auth", "gateway.settings", "model_service.settings",
                    "model_registry.settings", "service_registry.settings")
VAR = re.compile(r"\b(?:WORKER|GATEWAY|REGISTRY|MODEL_REGISTRY|MODEL_SERVICE|MINIO)_[A-Z0-9_]*[A-Z0-9]\b"
                 r"|\bMODEL_(?:NAME|TYPE|PATH|REVISION)\b")
CODE_SUFFIXES = {".py", ".sh", ".yml", ".yaml", ".json", ".toml", ".tpl", ".template", ".example", ".env"}
CODE_NAMES = {"Makefile", "Dockerfile", ".env.example", "chatui.env.template"}
# Flags of other tools that the docs name in running text (the tool in the value).
OTHER_TOOLS_FLAGS = {"--cacert": "curl", "--gpus": "docker run", "--rm": "docker run", "--runtime": "docker run",
                     "--scale": "docker compose up"}


def docs_text() -> str:
    return "\n".join(path.read_text() for path in doc_files())


@functools.cache
def code_text() -> str:
    """Every project file outside the docs and tests that can name a variable, flag or port, read once."""
    skip = {".git", ".venv", "docs", "tests", "wheelhouse", "node_modules", "__pycache__"}
    texts = []
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if parts & skip or any(p.endswith(".egg-info") for p in parts) or not path.is_file():
            continue
        if path.suffix in CODE_SUFFIXES or path.name in CODE_NAMES:
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def settings_classes() -> Iterator[type[BaseSettings]]:
    """Every settings class the services define, base classes included."""
    for module in SETTINGS_MODULES:
        importlib.import_module(module)
    stack = list(BaseSettings.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        yield cls


def settings_env_names() -> dict[str, set[str]]:
    """Each settings field's environment names (prefix + field, and its aliases), keyed by class.field."""
    names: dict[str, set[str]] = {}
    for cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        if not prefix:  # a base class: its fields are read under each subclass's prefix
            continue
        for field, info in cls.model_fields.items():
            env = {f"{prefix}{field}".upper()}
            alias = info.validation_alias
            choices = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else [])
            env |= {c.upper() for c in choices if isinstance(c, str)}
            names[f"{cls.__name__}.{field}"] = env
    return names


def test_every_code_block_says_whether_a_test_runs_it() -> None:
    unmarked = [b.where for b in all_blocks() if b.mark is None]
    assert not unmarked, ("mark each block <!-- run -->, <!-- run: servers -->, <!-- example: NAME --> or "
                          f"<!-- not-run: REASON --> on the line before it (tests/helpers/doc_blocks.py): {unmarked}")
    reasonless = [b.where for b in all_blocks() if b.mark == "not-run" and len(b.note) < 5]
    assert not reasonless, f"a not-run block says why: {reasonless}"
    examples = (ROOT / "tests/e2e/test_readme_examples.py").read_text()
    orphans = [b.where for b in all_blocks() if b.mark == "example" and f'example("{b.note}")' not in examples]
    assert not orphans, f"no test runs these named examples: {orphans}"


def test_every_variable_the_docs_name_exists() -> None:
    known = set().union(*settings_env_names().values())
    code = code_text()
    named = set(VAR.findall(docs_text()))
    missing = sorted(name for name in named if name not in known and not re.search(rf"\b{name}\b", code))
    assert not missing, f"the docs name variables no settings class or project file reads: {missing}"


def test_every_setting_is_documented() -> None:
    text = docs_text()
    undocumented = sorted(
        field for field, env in settings_env_names().items()
        if not any(re.search(rf"\b{name}\b", text) for name in env)
    )
    assert not undocumented, f"settings no page of docs/ or README names (docs/configuration.md): {undocumented}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands(text: str) -> Iterator[str]:
    """Each ``model-service ...`` command line in the docs, up to a shell separator or the end of code."""
    text = text.replace("\\|", "|")  # `list\|pull` in a table cell: alternatives, the first one is checked
    for match in re.finditer(r"(?<![\w/.-])model-service ([^\n`|;&)]*)", text):
        yield match.group(1)


def _flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_model_service_command_in_the_docs_parses(path: Path) -> None:
    problems = []
    for command in _commands(path.read_text()):
        try:
            words = shlex.split(command, comments=True)
        except ValueError:
            words = command.split()
        parser, used = build_parser(), ["model-service"]
        for word in words:
            sub = _subparsers(parser)
            if word in sub:
                parser = sub[word]
                used.append(word)
            elif word.startswith("--") and word.split("=", 1)[0] not in _flags_of(parser) | {"--"}:
                problems.append(f"{' '.join(used)}: no flag {word} (in: model-service {command.strip()})")
            elif sub and not word.startswith("-") and word not in {"...", "COMMAND"}:
                problems.append(f"{' '.join(used)}: no subcommand {word!r} (in: model-service {command.strip()})")
                break
    assert not problems, "\n".join(problems)


def test_every_port_the_docs_name_is_a_port_the_code_uses() -> None:
    code = code_text()
    text = docs_text()
    named = {int(p) for p in re.findall(r"(?:localhost|127\.0\.0\.1|[a-z-]+):(\d{4,5})\b", text)}
    named |= {int(p) for p in re.findall(r"\bports? (\d{4,5})\b", text)}
    unknown = sorted(p for p in named if not re.search(rf"\b{p}\b", code))
    assert not unknown, f"the docs name ports nothing in the code uses: {unknown}"
    defaults = {cls.model_fields["port"].default for cls in settings_classes() if "port" in cls.model_fields}
    undocumented = sorted(p for p in defaults if not re.search(rf"\b{p}\b", text))
    assert not undocumented, f"default ports the docs never name: {undocumented}"


def _all_model_service_flags() -> set[str]:
    flags: set[str] = set()
    pending = [build_parser()]
    while pending:
        parser = pending.pop()
        flags |= _flags_of(parser)
        pending.extend(_subparsers(parser).values())
    return flags


def test_every_flag_the_docs_name_in_text_exists() -> None:
    """Flags named in running text (``--flag`` in backticks): ours, a script's, or an engine server's
    that the code passes on (llama-server's, vLLM's) all appear in the project's code."""
    inline = re.sub(r"^```.*?^```", "", docs_text(), flags=re.M | re.S)
    named = {flag for span in re.findall(r"`([^`\n]+)`", inline)
             for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", span)}
    code = code_text()
    ours = _all_model_service_flags()
    unknown = sorted(flag for flag in named - OTHER_TOOLS_FLAGS.keys()
                     if flag not in ours and not re.search(rf"""["'\s]{re.escape(flag)}\b""", code))
    assert not unknown, f"the docs name flags nothing in the project defines or passes on: {unknown}"
