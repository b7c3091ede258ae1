"""The registry's ONNX export of a rerank model and the onnx engine serving it: the tiny test
cross-encoder stored in a local store, exported (fp32 and int8), fetched and verified, served on
``/v1/rerank`` and compared with the ``cross-encoder`` (torch) engine's answers on a fixed set of pairs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from common.errors import InvalidRequestError
from model_registry.catalog import Catalog, file_key
from model_registry.errors import ChecksumError
from model_registry.fetch import fetch_model
from model_registry.sources.folder import import_folder
from model_registry.sources.onnx_export import ONNX_FILE, export_onnx
from model_registry.storage import file_sha256, open_storage
from model_service.engines import build_engine, engine_name
from model_service.engines.base import Engine
from model_service.settings import WorkerSettings
from tests.helpers.model_registry import registry_client, registry_env, wait_job
from tests.helpers.onnx import OnnxExports, export_to_store
from tests.helpers.sentences import queries, sentences
from tests.helpers.workers import loaded_engine, worker_client_for

MODEL_ID = "test/tiny-cross-encoder"
# 5 queries x 40 documents: each query's documents are one /v1/rerank request.
QUERIES, DOCUMENTS = queries()[:5], sentences()[:40]
# Measured through the worker on the tiny cross-encoder (sigmoid scores 0.41..0.76, std 0.053): fp32
# differs from torch by at most 2.4e-7, same order for every query. int8 (dynamic, feed-forward
# down-projections kept fp32): max |diff| 0.011, every query's top document the same, Spearman rank
# correlation per query >= 0.988. The int8 bounds leave room for other CPUs' int8 kernels.
INT8_MAX_DIFF, INT8_MIN_SPEARMAN = 0.02, 0.97


@pytest.fixture(scope="module")
def exports(tiny_cross_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> OnnxExports:
    return export_to_store(tiny_cross_encoder_path, tmp_path_factory.mktemp("onnx-rerank-store"), MODEL_ID, "rerank")


@pytest.fixture(scope="module")
def torch_scores(tiny_cross_encoder_path: Path) -> Iterator[tuple[np.ndarray, list[int]]]:
    """The cross-encoder engine's scores and usage for every query, through its worker's /v1/rerank."""
    for engine in loaded_engine(**_values(tiny_cross_encoder_path, "auto")):
        assert engine.info().engine == "cross-encoder"
        yield _run(engine)


def _values(path: Path, engine: str) -> dict:
    return {"model_name": "tiny-ce", "model_type": "rerank", "model_path": str(path), "dtype": "float32",
            "engine": engine, "torch_threads": 1}


def _run(engine: Engine) -> tuple[np.ndarray, list[int]]:
    """Per query, each document's score by document index; and each request's prompt tokens."""
    import asyncio

    async def ask() -> tuple[np.ndarray, list[int]]:
        values = _values(Path(engine.model_path), "auto")
        async with worker_client_for(WorkerSettings(_env_file=None, **values), engine) as client:
            scores, usage = np.zeros((len(QUERIES), len(DOCUMENTS))), []
            for q, query in enumerate(QUERIES):
                resp = await client.post("/v1/rerank", json={"query": query, "documents": DOCUMENTS})
                assert resp.status_code == 200, resp.text
                for result in resp.json()["results"]:
                    scores[q, result["index"]] = result["relevance_score"]
                usage.append(resp.json()["usage"]["prompt_tokens"])
            return scores, usage

    return asyncio.run(ask())


def test_the_export_is_a_rerank_revision_with_sha256(exports: OnnxExports) -> None:
    store = open_storage(exports.settings)
    try:
        catalog = Catalog(store)
        for kind, revision in exports.revisions.items():
            manifest = catalog.manifest(MODEL_ID, revision)
            files = {f.path: f for f in manifest.files}
            assert revision == f"onnx-{kind}-{exports.source}" and manifest.model_type == "rerank"
            assert manifest.source["quantization"] == ("int8" if kind == "int8" else "none")
            assert {"tokenizer.json", "config.json", ONNX_FILE} <= set(files)
            assert not [p for p in files if p.endswith((".safetensors", ".bin"))]
            for path, entry in files.items():
                assert file_sha256(exports.folders[kind] / path) == entry.sha256
            assert engine_name("auto", "rerank", str(exports.folders[kind])) == "onnx"
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_onnx_scores_match_the_torch_engine(kind: str, exports: OnnxExports, torch_scores) -> None:
    reference, reference_usage = torch_scores
    for engine in loaded_engine(**_values(exports.folders[kind], "auto")):
        info = engine.info()
        assert info.engine == "onnx" and info.dtype == ("int8" if kind == "int8" else "float32")
        assert engine.metadata["activation"] == "sigmoid" and engine.max_model_len == 128
        assert engine.session.get_session_options().intra_op_num_threads == 1  # WORKER_TORCH_THREADS
        scores, usage = _run(engine)
        assert engine.run_calls < len(QUERIES) * len(DOCUMENTS)  # batched, not pair by pair
    assert usage == reference_usage
    assert reference.std() > 0.01  # the scores spread far wider than the tolerance: their order says something
    diff = np.abs(scores - reference).max()
    print(kind, "max |diff|", diff, "spearman", min(_spearman(s, r) for s, r in zip(scores, reference, strict=True)),
          "range", reference.min(), reference.max(), "std", reference.std())
    if kind == "fp32":
        assert diff <= 1e-4
        assert (np.argsort(-scores, axis=1) == np.argsort(-reference, axis=1)).all()  # the same order
    else:
        assert diff <= INT8_MAX_DIFF
        assert (scores.argmax(axis=1) == reference.argmax(axis=1)).all()
        assert min(_spearman(s, r) for s, r in zip(scores, reference, strict=True)) >= INT8_MIN_SPEARMAN


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)) for x in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def test_only_embedding_and_rerank_models_export(exports: OnnxExports, tiny_cross_encoder_path: Path) -> None:
    store = open_storage(exports.settings)
    try:
        catalog = Catalog(store)
        import_folder(catalog, "test/stored-as-llm", tiny_cross_encoder_path, "llm")
        with pytest.raises(InvalidRequestError, match="Only embedding and rerank models export") as refused:
            export_onnx(catalog, "test/stored-as-llm")
        assert refused.value.code == "onnx_export_unsupported"
    finally:
        store.close()


def test_a_corrupted_export_is_refused(exports: OnnxExports, tmp_path: Path) -> None:
    store = open_storage(exports.settings)
    revision = exports.revisions["fp32"]
    key = file_key(MODEL_ID, revision, ONNX_FILE)
    original = store.get_bytes(key)
    store.put_bytes(key, original[:100] + bytes([original[100] ^ 0xFF]) + original[101:])
    try:
        with pytest.raises(ChecksumError, match=r"onnx/model\.onnx"):
            fetch_model(store, MODEL_ID, revision, tmp_path / "cache")
    finally:
        store.put_bytes(key, original)
        store.close()


def test_folders_that_are_not_a_rerank_export_are_clear_errors(tiny_cross_encoder_path: Path,
                                                               tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    no_graph = build_engine(WorkerSettings(_env_file=None, **_values(tiny_cross_encoder_path, "onnx")))
    with pytest.raises(ValueError, match="holds no ONNX model"):
        no_graph.load()
    # An embedding export's output is the sentence embedding: a graph with that output, beside the tokenizer.
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        (tmp_path / name).write_bytes((tiny_cross_encoder_path / name).read_bytes())
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("sentence_embedding", TensorProto.INT64, ["batch", "sequence"])
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["sentence_embedding"])], "g", [ids], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "model.onnx"))
    embedding_graph = build_engine(WorkerSettings(_env_file=None, **_values(tmp_path, "auto")))
    with pytest.raises(ValueError, match="not a rerank export"):
        embedding_graph.load()


async def test_http_export_job_keeps_the_model_type(exports: OnnxExports) -> None:
    async with registry_client(exports.settings) as (_, client):
        resp = await client.post(f"/models/{MODEL_ID}/export-onnx", json={})
        assert resp.status_code == 202, resp.text
        assert resp.json()["model_type"] == "rerank"
        job = await wait_job(client, resp.json()["id"])
        assert job["state"] == "done" and job["resolved_revision"] == exports.revisions["fp32"], job


async def test_a_worker_from_the_store_serves_the_export_with_auto(exports: OnnxExports, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``MODEL_REVISION`` naming the export: fetched, verified, and ``auto`` picks onnx for a rerank worker."""
    for key, value in registry_env(exports.settings).items():
        monkeypatch.setenv(key, value)
    settings = WorkerSettings(_env_file=None, model_name=MODEL_ID, model_type="rerank", model_source="store",
                              model_revision=exports.revisions["fp32"], cache_dir=tmp_path / "cache")
    async with worker_client_for(settings) as client:
        assert client.app.state.worker.engine.info().engine == "onnx"
        resp = await client.post("/v1/rerank", json={"query": QUERIES[0], "documents": DOCUMENTS[:3], "top_n": 2})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["results"]) == 2 and body["usage"]["prompt_tokens"] > 3
