"""Streamed tool calls in OpenAI's chunk shape: per call, a first delta with its ``index``, ``id``,
``type`` and function ``name`` (arguments ``""``), then the arguments in pieces.

Constrained answers stream live. A named function's text *is* its arguments object, so each text
delta is an arguments piece; a ``required`` answer is a JSON array of ``{"name", "arguments"}``
objects, read as it grows by :class:`CallArrayReader`. ``auto`` answers hold back what may be a call
(an answer that opens with ``{``, ``[`` or ``<``, or anything from a ``<tool_call>`` marker on) until
the answer is whole, then parse it once with the same parser as the non-streamed answer; ordinary
text streams as content as it comes.
"""

from __future__ import annotations

import re
from typing import Any

from model_service.tools import OutputPlan, call_id, tool_calls

_MARKER = "<tool_call>"
_OPENERS = ("{", "[", "<")
# The start of one call in the array: `[{"name": "f", "arguments": ` (or `}, {...` for the next one).
_CALL_HEAD = re.compile(r'\s*\}?\s*[\[,]\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]+)"\s*,\s*"arguments"\s*:\s*')


class ToolStream:
    """One choice's text deltas in, delta dicts (``{"content": ...}`` or ``{"tool_calls": [...]}``) out."""

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan
        self.called = False  # at least one tool call was sent
        self._held = ""  # text that may be (part of) a call
        self._holding = False
        self._shown = False  # some content was streamed already
        self._id = call_id()
        self._array = CallArrayReader() if plan.mode == "required" else None

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self.plan.mode == "named":
            out = [] if self.called else [_header(0, self._id, self.plan.function or "")]
            self.called = True
            return out + ([_arguments(0, text)] if text else [])
        if self._array is not None:
            out = self._array.push(text)
            self.called = self.called or bool(out)
            return out
        if self._holding:
            self._held += text
            return []
        return self._content(text)

    def _content(self, text: str) -> list[dict[str, Any]]:
        """Auto mode before any call: show text, keep back what could start one."""
        pending = self._held + text
        if not pending.strip():
            self._held = pending
            return []
        if pending.lstrip().startswith(_OPENERS) and not self._shown:
            self._holding, self._held = True, pending
            return []
        cut = pending.find(_MARKER)
        if cut < 0:
            cut = _partial_marker(pending)
        self._shown = True
        self._held = pending[cut:] if cut >= 0 else ""
        self._holding = cut >= 0 and pending[cut:].startswith(_MARKER)
        shown = pending[:cut] if cut >= 0 else pending
        return [{"content": shown}] if shown else []

    def finish(self) -> list[dict[str, Any]]:
        """What is still held: the calls it makes, or the text it turned out to be."""
        held, self._held = self._held, ""
        if self._array is not None and not self.called:  # cut short before its first call was named
            held = self._array.text
        if self.plan.mode == "named" or not held or self.called:
            return []
        content, calls = tool_calls(self.plan, held)
        if not calls:
            return [{"content": held}]
        self.called = True
        out = [{"content": content}] if content and not self._shown else []
        for k, call in enumerate(calls):
            out += [_header(k, call.id, call.function.name), _arguments(k, call.function.arguments)]
        return out


class CallArrayReader:
    """A growing ``[{"name": ..., "arguments": {...}}, ...]``: each call's header delta as soon as its
    name is whole, then its arguments object in pieces as they come (strings and nesting tracked, so
    a brace inside a string does not end it)."""

    def __init__(self) -> None:
        self.text = ""
        self._pos = 0
        self._calls = 0
        self._in_args = False
        self._depth, self._in_string, self._escaped = 0, False, False

    def push(self, text: str) -> list[dict[str, Any]]:
        self.text += text
        out: list[dict[str, Any]] = []
        while True:
            if not self._in_args:
                head = _CALL_HEAD.match(self.text, self._pos)
                if head is None:
                    return out
                out.append(_header(self._calls, call_id(), head.group(1)))
                self._pos, self._in_args = head.end(), True
            start = self._pos
            done = self._scan()
            if self._pos > start:
                out.append(_arguments(self._calls, self.text[start:self._pos]))
            if not done:
                return out
            self._in_args, self._calls = False, self._calls + 1

    def _scan(self) -> bool:
        """Move over the arguments text there is; True once the arguments object has closed."""
        while self._pos < len(self.text):
            ch = self.text[self._pos]
            self._pos += 1
            if self._in_string:
                self._escaped, self._in_string = (not self._escaped and ch == "\\"), (self._escaped or ch != '"')
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return True
        return False


def _partial_marker(text: str) -> int:
    """Where a ``<tool_call>`` marker may begin at the very end of ``text`` (split across deltas), or -1."""
    for size in range(min(len(_MARKER) - 1, len(text)), 0, -1):
        if text.endswith(_MARKER[:size]):
            return len(text) - size
    return -1


def _header(k: int, id_: str, name: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": k, "id": id_, "type": "function", "function": {"name": name, "arguments": ""}}]}


def _arguments(k: int, piece: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": k, "function": {"arguments": piece}}]}
