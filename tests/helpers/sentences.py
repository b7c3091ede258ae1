"""The fixed texts the ONNX quality check and the embeddings benchmark compare engines on.

``tests/data/embedding_sentences.txt`` (200 sentences, the corpus of the retrieval set) and
``tests/data/embedding_queries.txt`` (20 queries) were written once by :func:`generate` and are
shipped as they are, so every run compares the same inputs; the test checks they still match.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "data"
SENTENCES_FILE = DATA / "embedding_sentences.txt"
QUERIES_FILE = DATA / "embedding_queries.txt"

_SUBJECTS = ["The doctor", "A small cat", "Our team", "The old bridge", "My neighbour", "The new phone",
             "A heavy storm", "The city council", "This recipe", "The museum", "A young pianist", "The train",
             "The company", "Her garden", "The database", "A migrating bird", "The telescope", "The bakery",
             "The river", "An electric car"]
_VERBS = ["opened", "repaired", "described", "ignored", "celebrated", "measured", "delayed", "protected",
          "improved", "visited", "replaced", "explained", "predicted", "painted", "cleaned", "sold"]
_OBJECTS = ["the annual budget", "a broken window", "the results of the experiment", "fresh bread",
            "the mountain trail", "an ancient manuscript", "the customer complaints", "a quiet harbour",
            "the football match", "the solar panels", "a rare orchid", "the software update",
            "the winter festival", "an empty warehouse", "the vaccine trial", "the jazz concert"]
_TAILS = ["", " yesterday", " before the deadline", " in the north of the country", " with great care",
          " after a long discussion about costs and risks", " despite the heavy rain",
          " because nobody else wanted to do it on a Sunday morning", " for the first time in ten years"]
_QUESTIONS = ["Who {v} {o}?", "news about {o}", "{s} {v} something", "when was {o} {v}", "{o}"]


def generate(seed: int = 17) -> tuple[list[str], list[str]]:
    """200 distinct sentences of varied length and 20 short queries built from the same words."""
    rng = random.Random(seed)
    sentences: list[str] = []
    while len(sentences) < 200:
        text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}."
        if text not in sentences:
            sentences.append(text)
    queries = [rng.choice(_QUESTIONS).format(s=rng.choice(_SUBJECTS), v=rng.choice(_VERBS),
                                             o=rng.choice(_OBJECTS)) for _ in range(20)]
    return sentences, queries


def sentences() -> list[str]:
    return SENTENCES_FILE.read_text(encoding="utf-8").splitlines()


def queries() -> list[str]:
    return QUERIES_FILE.read_text(encoding="utf-8").splitlines()


def agreement(reference: Any, candidate: Any, ref_queries: Any, cand_queries: Any, k: int = 10) -> dict[str, float]:
    """How closely ``candidate`` vectors follow ``reference`` ones for the same sentences: the cosine of
    each pair (min and mean), and for the queries' rankings of the corpus, the share of queries whose
    best hit is the same and the mean overlap of the top ``k``."""
    def unit(rows: Any) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    ref, cand = unit(reference), unit(candidate)
    cosines = (ref * cand).sum(axis=1)
    ref_top = np.argsort(-(unit(ref_queries) @ ref.T), axis=1)[:, :k]
    cand_top = np.argsort(-(unit(cand_queries) @ cand.T), axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(ref_top, cand_top, strict=True)]
    return {"cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean()),
            "top1_agreement": float((ref_top[:, 0] == cand_top[:, 0]).mean()),
            f"top{k}_overlap": float(np.mean(overlap))}


if __name__ == "__main__":  # rewrite the data files (only when the generator changes on purpose)
    corpus, asked = generate()
    SENTENCES_FILE.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    QUERIES_FILE.write_text("\n".join(asked) + "\n", encoding="utf-8")
