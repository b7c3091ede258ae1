"""The ONNX Runtime rows of ``scripts/bench.py``'s embeddings sweep (issue 17).

The starter MiniLM is put in a throw-away local store and exported there by the registry's own code
(fp32 and dynamic int8, ``model_registry.sources.onnx_export``). Before any server starts, each
export's quality against the PyTorch output is measured on the shipped 200 sentences and 20 queries
(per-sentence cosine, top-1 and top-10 agreement) with its raw in-process encode rate (the engine's
``encode`` at batch 1 and 32: the ceiling the served rows are compared with). Then one worker per
export runs beside the torch worker, behind the same gateway, and joins the interleaved sweep.
Skip it all with ``--skip onnx``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the export and the sentence set are shared with the tests

VARIANTS = ("fp32", "int8")


def model_name(base: str, variant: str) -> str:
    return f"{base}-onnx-{variant}"


def export(model_folder: Path) -> dict[str, Path]:
    """The fp32 and int8 exports of ``model_folder``, fetched and verified from a scratch store."""
    from tests.helpers.onnx import export_minilm

    started = time.perf_counter()
    folders = export_minilm(model_folder, Path(tempfile.mkdtemp(prefix="bench-onnx-"))).folders
    print(f"exported {', '.join(folders)} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return folders


def ceilings(model_folder: Path, folders: dict[str, Path], threads: int, batch: int) -> dict[str, Any]:
    """Quality figures against sentence-transformers, and each export's raw encode items/s."""
    from bench_load import SENTENCE
    from sentence_transformers import SentenceTransformer

    from model_service.engines.onnx import OnnxEmbedder
    from model_service.settings import WorkerSettings
    from tests.helpers.sentences import agreement, queries, sentences

    torch_model = SentenceTransformer(str(model_folder), device="cpu")
    corpus, asked = sentences(), queries()
    reference = [torch_model.encode(texts, batch_size=batch, show_progress_bar=False) for texts in (corpus, asked)]
    out: dict[str, Any] = {"onnx_quality": {}, "onnx_raw_encode_items_per_s": {}}
    for variant, folder in folders.items():
        engine = OnnxEmbedder(WorkerSettings(_env_file=None, model_type="embedding", model_path=str(folder),
                                             engine="onnx", torch_threads=threads or None,
                                             embedding_max_batch_size=batch))
        engine.load()
        try:
            ours = [engine.encode(texts)[0] for texts in (corpus, asked)]
            figures = agreement(reference[0], ours[0], reference[1], ours[1])
            out["onnx_quality"][variant] = {k: round(v, 6) for k, v in figures.items()}
            rates = {}
            for size, count in ((1, 64), (batch, 256)):
                engine.encode([SENTENCE] * size)  # warm-up
                start = time.perf_counter()
                for _ in range(count // size):
                    engine.encode([SENTENCE] * size)
                rates[size] = round(count / (time.perf_counter() - start), 2)
            out["onnx_raw_encode_items_per_s"][variant] = rates
        finally:
            engine.close()
        print(f"onnx {variant}: {out['onnx_quality'][variant]}, raw {rates} items/s", file=sys.stderr)
    return out


def start_workers(start: Callable[[str, list[str], dict[str, str]], str], folders: dict[str, Path], base: str,
                  env: dict[str, str]) -> dict[str, str]:
    """One worker per export (``start(name, args, env)`` returns its URL); keys ``onnx_<variant>``."""
    return {f"onnx_{v}": start(f"onnx-{v}", ["worker", "--model-type", "embedding", "--engine", "onnx",
                                             "--model-name", model_name(base, v), "--model-path", str(folder)],
                               env)
            for v, folder in folders.items()}


def targets(embed: Callable[..., Any], urls: dict[str, str], gateway: str, base: str) -> dict[str, Any]:
    """Direct and via-gateway targets for each export worker that runs."""
    out: dict[str, Any] = {}
    for v in VARIANTS:
        if f"onnx_{v}" in urls:
            name = model_name(base, v)
            out[f"embeddings_onnx_{v}_direct"] = lambda c, u=urls[f"onnx_{v}"], n=name: embed(c, u, model=n)
            out[f"embeddings_onnx_{v}_gateway"] = lambda c, n=name: embed(c, gateway, model=n)
    return out


def table(res: dict[str, Any]) -> list[str]:
    """One row per export and level: via gateway and direct, against infinity-emb, the torch worker
    and the export's own raw encode ceiling, with its quality figures."""
    if not any(res.get(f"embeddings_onnx_{v}_gateway") for v in VARIANTS):
        return []
    ceilings_ = res.get("ceilings", {})
    inf = {r["concurrency"]: r for r in res.get("embeddings_infinity") or []}
    torch_direct = {r["concurrency"]: r for r in res.get("embeddings_direct") or []}
    lines = ["### Embeddings on ONNX Runtime (one sentence per request)", "",
             "| export | conc. | via gateway items/s | direct items/s | gateway vs infinity | direct vs infinity "
             "| direct vs torch worker | raw encode batch 32 | gateway vs raw | gateway p50 / p95 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for v in VARIANTS:
        raw = {int(k): x for k, x in ceilings_.get("onnx_raw_encode_items_per_s", {}).get(v, {}).items()}
        raw32 = raw.get(max(raw)) if raw else None
        direct = {r["concurrency"]: r for r in res.get(f"embeddings_onnx_{v}_direct") or []}
        for row in res.get(f"embeddings_onnx_{v}_gateway") or []:
            c, d = row["concurrency"], direct.get(row["concurrency"], {})
            i, t = inf.get(c, {}).get("items_per_s"), torch_direct.get(c, {}).get("items_per_s")
            lines.append(f"| {v} | {c} | {row['items_per_s']} | {d.get('items_per_s', '-')} "
                         f"| {_ratio(row['items_per_s'], i)} | {_ratio(d.get('items_per_s'), i)} "
                         f"| {_ratio(d.get('items_per_s'), t)} | {raw32 or '-'} | {_ratio(row['items_per_s'], raw32)} "
                         f"| {row.get('latency_p50_ms')} / {row.get('latency_p95_ms')} "
                         f"| {row['errors']}/{d.get('errors', '-')} |")
    for v, q in ceilings_.get("onnx_quality", {}).items():
        lines.append("")
        lines.append(f"Quality of {v} against the PyTorch output (200 sentences, 20 queries): cosine min "
                     f"{q['cosine_min']:.6f}, mean {q['cosine_mean']:.6f}; top-1 agreement {q['top1_agreement']:.2f}, "
                     f"top-10 overlap {q['top10_overlap']:.2f}.")
    return lines


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


if __name__ == "__main__":  # a quick look at the exports alone: quality and raw rates, no servers
    from stack.starters import STARTER_EMBEDDING, prepare

    folder = prepare(STARTER_EMBEDDING)
    print(ceilings(folder, export(folder), 0, 32))
