"""A tiny randomly initialised cross-encoder, built and saved once per session, for the rerank worker.

No cross-encoder (reranker) ships its weights on PyPI, so the worker's real loading and scoring code
(sentence-transformers ``CrossEncoder``) runs on this one: a 2-layer BERT sequence classifier with one
label and the all-MiniLM-L6-v2 starter's tokenizer. Its scores are meaningless; what matters is that
the folder is a normal Hugging Face cross-encoder folder that ``CrossEncoder`` loads and scores with.
Its weights are drawn wider than BERT's default (``initializer_range`` 0.2, not 0.02) so its scores
spread over the sigmoid's range (with the default every pair scores 0.5010 +- 0.0001): comparing
rankings, as the ONNX tests do, only means something when the scores differ.
The ``tiny_cross_encoder_path`` fixture (tests/inprocess/conftest.py) builds it once per session.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_cross_encoder(tokenizer_source: Path, folder: Path) -> Path:
    """Save a tiny BERT cross-encoder (model + tokenizer) into ``folder``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=1, initializer_range=0.2)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
