"""Streamed tool calls in OpenAI's chunk shape: per call, a first delta with its ``index``, ``id``,
``type`` and function ``name`` (arguments ``""``), then the arguments in pieces.

A named function streams live: the constrained text *is* the arguments object, so each text delta is
an arguments piece. ``required`` and ``auto`` answers hold back what may be a call (an answer that
opens with ``{``, ``[`` or ``<``, or anything from a ``<tool_call>`` marker on) until the answer is
whole, then parse it once with the same parser as the non-streamed answer, so both always agree;
ordinary text streams as content as it comes.
"""

from __future__ import annotations

from typing import Any

from model_service.tools import OutputPlan, call_id, tool_calls

_MARKER = "<tool_call>"
_OPENERS = ("{", "[", "<")


class ToolStream:
    """One choice's text deltas in, delta dicts (``{"content": ...}`` or ``{"tool_calls": [...]}``) out."""

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan
        self.called = False  # at least one tool call was sent
        self._held = ""  # text that may be (part of) a call
        self._holding = plan.mode == "required"
        self._shown = False  # some content was streamed already
        self._id = call_id()

    def feed(self, text: str) -> list[dict[str, Any]]:
        if self.plan.mode == "named":
            out = [] if self.called else [_header(0, self._id, self.plan.function or "")]
            self.called = True
            return out + ([_arguments(0, text)] if text else [])
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
        if self.plan.mode == "named" or not held:
            return []
        content, calls = tool_calls(self.plan, held)
        if not calls:
            return [{"content": held}]
        self.called = True
        out = [{"content": content}] if content and not self._shown else []
        for k, call in enumerate(calls):
            out += [_header(k, call.id, call.function.name), _arguments(k, call.function.arguments)]
        return out


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
