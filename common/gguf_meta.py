"""What a GGUF file says about itself, read the same way by the registry (the model card's
``quantization``) and the llama.cpp worker (``/health``'s ``dtype``)."""

from __future__ import annotations

from typing import Any


def file_type_name(fields: Any) -> str | None:
    """The quantization named by ``general.file_type`` (``Q4_1``, ``Q8_0``, ``BF16``...) in a
    ``GGUFReader``'s fields; None when the file does not say."""
    from gguf import LlamaFileType

    field = fields.get("general.file_type")
    if field is None:
        return None
    value = int(field.contents())
    try:
        return LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return str(value)
