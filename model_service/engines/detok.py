"""Incremental detokenisation: turn a growing list of token ids into text pieces.

Decoding tokens one by one breaks words whose spacing depends on neighbours and characters split
over several byte tokens. Like vLLM, decode a short window of recent tokens and emit only text that
is new and complete (no trailing U+FFFD, the mark of a half-decoded UTF-8 sequence).
"""

from __future__ import annotations

from collections.abc import Callable

_INCOMPLETE = "\ufffd"


class IncrementalDecoder:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # tokens whose text was already emitted

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes (often empty while bytes are pending)."""
        self.ids.append(token_id)
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        full_text = self._decode(self.ids[self._prefix:])
        if len(full_text) > len(prefix_text) and not full_text.endswith(_INCOMPLETE):
            self._prefix, self._read = self._read, len(self.ids)
            return full_text[len(prefix_text):]
        return ""

    def flush(self) -> str:
        """Whatever is still pending at the end, even if it decodes to a replacement character."""
        if self._read == len(self.ids):
            return ""
        prefix_text = self._decode(self.ids[self._prefix:self._read])
        full_text = self._decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return full_text[len(prefix_text):]
