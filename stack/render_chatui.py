"""Chat UI's files from a deployment file: ``MODELS`` (every chat and vision model, each pointed at the
gateway) in ``chatui.env.template``, and the Chat UI compose file.

The template text lives in ``deploy/compose/chatui.env`` and ``deploy/compose/chatui.yml``; only the model
list comes from the deployment file, so the names Chat UI sends are the names the gateway serves. A model
that only runs in a compose profile is listed with a note naming the profile: Chat UI offers every model
in MODELS, and one whose worker is not running answers 503.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stack.deployment import Deployment, ModelSpec

TEMPLATES = Path(__file__).resolve().parents[1] / "deploy" / "compose"
GATEWAY_URL = "http://gateway:8080/v1"
# What Chat UI may upload for a vision model. It resizes and re-encodes an image before it sends it as a
# base64 data: URL (a third larger), so 5 MB stays under the gateway's and worker's 8 MiB body limit.
IMAGE = {"supportedMimeTypes": ["image/png", "image/jpeg", "image/webp"], "preferredMimeType": "image/webp",
         "maxSizeInMB": 5, "maxWidth": 1024, "maxHeight": 1024}


def chatui_model(model: ModelSpec) -> dict[str, Any]:
    """One MODELS entry. ``multimodal`` at both levels: the model's turns on image upload in the page; the
    endpoint's makes Chat UI send OpenAI ``image_url`` parts instead of markdown inlined in the text."""
    vision = model.type == "multimodal"
    endpoint: dict[str, Any] = {"type": "openai", "baseURL": GATEWAY_URL}
    entry: dict[str, Any] = {
        "name": model.name,
        "displayName": model.name.rsplit("/", 1)[-1] + (" (vision)" if vision else ""),
        "description": f"{'Chat about images' if vision else 'Chat'}, served by the platform's gateway.",
        "parameters": {"temperature": 0.2 if vision else 0.7, "max_new_tokens": 512 if vision else 1024},
    }
    if vision:
        entry["multimodal"] = True
        endpoint["multimodal"] = {"image": IMAGE}
    entry["endpoints"] = [endpoint]
    return entry


def render_chatui_env(d: Deployment, source: str) -> str:
    models = [m for m in d.models if m.type in ("llm", "multimodal")]
    listed = ",\n".join("  " + json.dumps(chatui_model(m)) for m in models)
    gated = [f"#   {m.name}: its worker runs only with --profile {' / '.join(m.compose.profiles)}\n"
             for m in models if m.compose.profiles]
    note = ("# Models whose worker starts only in a compose profile (start it, or drop the entry):\n"
            + "".join(gated)) if gated else ""
    text = (TEMPLATES / "chatui.env").read_text(encoding="utf-8")
    head = f"# MODELS rendered from {source} by `model-service render compose --chatui-env`.\n"
    return head + text.replace("@MODELS_NOTE@", note).replace("@MODELS@", f"[\n{listed}\n]")


def render_chatui_compose() -> str:
    """The Chat UI services (no model list: that is MODELS in chatui.env), from their template."""
    head = ("# Written by `model-service render compose --chatui-compose` (make render).\n"
            "# Edit deploy/compose/chatui.yml instead.\n")
    return head + (TEMPLATES / "chatui.yml").read_text(encoding="utf-8")
