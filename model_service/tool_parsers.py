"""Tool calls out of a model's text, for the families whose chat templates take ``tools``.

No well-kept standalone parser installs on its own (vLLM's and SGLang's live inside those servers),
so this is a small one, covering the three output conventions that the common templates teach:

- Hermes / Qwen 2.5+ / many fine-tunes: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
  one block per call, possibly after some text.
- Llama 3.1+: the whole answer is ``{"name": ..., "parameters": {...}}`` (several joined by ``;``),
  sometimes after the ``<|python_tag|>`` marker.
- Mistral: ``[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]``; the marker is a special token the
  detokenizer drops, so a bare JSON array of calls is read the same way.

A call only counts when it names one of the request's tools, so an ordinary JSON answer is not
mistaken for a call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_MARKERS = ("[TOOL_CALLS]", "<|python_tag|>")


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # JSON text


def parse_tool_calls(text: str, names: set[str]) -> tuple[str | None, list[ParsedCall]]:
    """``(content, calls)``: the text the model said besides its calls (None when nothing) and the
    calls to tools in ``names``; no calls means the whole text is the answer."""
    if "<tool_call>" in text:
        head, _, _ = text.partition("<tool_call>")
        calls = [c for block in _HERMES.findall(text) for c in _calls(_loads(block), names)]
        return (head.strip() or None, calls) if calls else (text, [])
    body = text.strip()
    for marker in _MARKERS:
        body = body.removeprefix(marker).strip()
    calls = _calls(_loads(body), names)
    if not calls and ";" in body:  # Llama 3's several calls
        parts = [_calls(_loads(part), names) for part in body.split(";")]
        calls = [c for part in parts for c in part] if all(parts) else []
    return (None, calls) if calls else (text, [])


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _calls(value: Any, names: set[str]) -> list[ParsedCall]:
    """The calls in a decoded call object or array of them; [] if any item is not a call."""
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, names) for item in items]
    return [c for c in calls if c is not None] if items and all(calls) else []


def _call(item: Any, names: set[str]) -> ParsedCall | None:
    if not isinstance(item, dict) or item.get("name") not in names:
        return None
    args = item.get("arguments", item.get("parameters", {}))
    if isinstance(args, str):  # some models send the JSON text itself
        args = _loads(args)
    if not isinstance(args, dict):
        return None
    return ParsedCall(item["name"], json.dumps(args, ensure_ascii=False))
