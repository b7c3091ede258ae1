"""Read a deployment file: YAML with line marks, then the model, then the cross-field checks.

A bad file raises :class:`DeploymentFileError` carrying one line per problem, ``FILE:LINE: PATH:
MESSAGE``, so a user fixes everything in one pass. PyYAML's composer keeps each node's start mark,
which is how a pydantic error location (``models.1.port``) becomes a line: walk the node tree along
the location as far as it exists (a missing field points at its parent). Duplicate keys, which YAML
loaders silently resolve to the last one, are problems too.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from stack.deployment import Deployment, Problem, problems

STARTER_FILE = Path(__file__).with_name("starter.yaml")
SCHEMA_TITLE = "Model Service Platform deployment file"


class DeploymentFileError(ValueError):
    def __init__(self, source: str, lines: list[str]) -> None:
        self.source = source
        self.lines = lines
        super().__init__("\n".join(lines))


def load_deployment(path: str | Path) -> Deployment:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeploymentFileError(str(path), [f"{path}: cannot read the deployment file: {exc.strerror}"]) from exc
    return parse_deployment(text, str(path))


def parse_deployment(text: str, source: str = "<deployment>") -> Deployment:
    loader = yaml.SafeLoader(text)
    try:  # one parse: the node tree (with line marks for the messages), then the data built from it
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise DeploymentFileError(source, [f"{source}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from exc
    finally:
        loader.dispose()
    found = list(_duplicate_keys(root))
    if not found:
        try:
            deployment = Deployment.model_validate(data if data is not None else {})
        except ValidationError as exc:
            found = [Problem(tuple(err["loc"]), _message(err)) for err in exc.errors()]
        else:
            found = problems(deployment)
    if found:
        raise DeploymentFileError(source, [f"{source}:{p.line or _line(root, p.path)}: {_dotted(p.path)}: {p.message}"
                                           for p in found])
    return deployment


def _message(err: dict) -> str:
    if err["type"] == "missing":
        return "required field missing"
    if err["type"] == "extra_forbidden":
        return "unknown field (not part of a deployment file; see docs/deployment.schema.json)"
    return str(err["msg"]).removeprefix("Value error, ")


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


def _line(root: yaml.Node | None, path: tuple[str | int, ...]) -> int:
    """The line of the deepest node on ``path``: a mapping entry's key line, a list item's own line."""
    if root is None:
        return 1
    node, line = root, root.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if k.value == part), None)
            if entry is None:
                break
            line, node = entry[0].start_mark.line + 1, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node | None, path: tuple[str | int, ...] = ()):
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                yield Problem((*path, key.value), "this key is given twice", key.start_mark.line + 1)
            seen.add(key.value)
            yield from _duplicate_keys(value, (*path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i))


def deployment_schema() -> dict:
    schema = Deployment.model_json_schema()
    schema["title"] = SCHEMA_TITLE
    return schema


def schema_text() -> str:
    return json.dumps(deployment_schema(), indent=2, sort_keys=True) + "\n"
