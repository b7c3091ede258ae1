"""A tiny randomly initialised LLaVA, built and saved once per session, for the vision worker's tests.

No real vision-language model ships on PyPI, so the worker's real loading and generation code runs
on this one: a 2-layer CLIP vision tower (30x30 images in 15x15 patches: 4 image tokens each) and a
2-layer Llama text model with the SmolLM2 starter's tokenizer plus an ``<image>`` token. Its answers
are gibberish; what matters is that the folder is a normal Hugging Face LLaVA folder that
``AutoProcessor`` and ``AutoModelForImageTextToText`` load. The CLIP tower keeps its CLS token, so
the processor needs ``num_additional_image_tokens=1`` for the image-token count to match. Without
torchvision, transformers uses its PIL image processor.

The ``tiny_llava_path`` fixture (tests/inprocess/conftest.py) builds it once per session.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 30
# ChatML like SmolLM2's, with one image token per image part (processors' templates take parts).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image>{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llava(tokenizer_source: Path, folder: Path) -> Path:
    """Save a tiny LLaVA (model + processor) into ``folder``, using the tokenizer at ``tokenizer_source``."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=15, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=4)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=15,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def png_data_url(width: int = 40, height: int = 32, color: tuple[int, int, int] = (200, 30, 30)) -> str:
    """A real PNG made with PIL, as the base64 data URL a client sends."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_message(text: str, *urls: str) -> dict:
    """One user message with a text part and one ``image_url`` part per URL."""
    parts: list[dict] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"role": "user", "content": parts}
