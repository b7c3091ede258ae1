"""``model-service models ...``: manage the model store directly, no registry server needed.

``add_models_commands(subparsers)`` adds ``list``, ``pull``, ``import``, ``export``, ``import-bundle``,
``export-onnx``, ``export-gguf``, ``rm``, ``alias`` and ``fetch`` to the ``models`` group of the
``model-service`` command. Each command opens the store the registry settings describe
(``MODEL_REGISTRY_*``, ``MINIO_*``, ``HF_*`` or ``.env``), runs the same source code as the registry's
background jobs, and shows a progress bar.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from common.errors import APIError
from model_registry.catalog import Catalog
from model_registry.ingest import Progress
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.gguf_export import OUTTYPES
from model_registry.storage import open_storage

MODEL_TYPES = ["llm", "embedding", "multimodal", "transcription"]


@contextmanager
def _catalog() -> Iterator[tuple[Catalog, ModelRegistrySettings]]:
    settings = ModelRegistrySettings()
    store = open_storage(settings)
    try:
        store.check()
        yield Catalog(store), settings
    finally:
        store.close()


@contextmanager
def _bar(label: str) -> Iterator[Progress]:
    """A byte progress bar on stderr fed by a ``Progress`` (which sources update from their thread)."""
    from tqdm import tqdm

    with tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
              disable=None) as bar:
        def update(p: Progress) -> None:
            if bar.total != p.bytes_total:
                bar.total = p.bytes_total
            bar.set_postfix_str(f"files {p.files_done}/{p.files_total}", refresh=False)
            bar.update(p.bytes_done - bar.n)

        yield Progress(on_change=update)


def _run(fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Turn the registry's typed errors into one ``error:`` line and exit status 1."""
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except APIError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted: nothing half-written is listed; run the command again to continue",
                  file=sys.stderr)
            return 130
    return wrapper


def _list(args: argparse.Namespace) -> int:
    with _catalog() as (catalog, _):
        models = catalog.list_models()
    if args.json:
        print(json.dumps([m.view() for m in models], indent=1))
        return 0
    print(f"{'ID':50} {'TYPE':14} {'CURRENT':42} {'REVS':>4} {'SIZE':>10}")
    for m in models:
        v = m.view()
        print(f"{m.id:50} {m.type or '-':14} {v['current'] or '-':42} {len(m.revisions):>4} "
              f"{v['size'] / 1e6:>8.1f}MB")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from model_registry.app import hub_config
    from model_registry.sources.hf import download_hf

    with _catalog() as (catalog, settings), _bar(args.id) as progress:
        manifest = download_hf(catalog, hub_config(settings), args.id, args.revision, args.type,
                               args.include or None, args.exclude or None, progress, settings.tmp_dir)
    print(f"{args.id}@{manifest.revision}: {len(manifest.files)} files, {manifest.total_size} bytes, verified")
    return 0


def _import(args: argparse.Namespace) -> int:
    from model_registry.sources.folder import import_folder
    from model_registry.sources.gguf import import_gguf, is_gguf_path

    path = Path(args.path).resolve()
    with _catalog() as (catalog, settings), _bar(args.id) as progress:
        if is_gguf_path(path):
            if not args.as_is:
                print(f"converting {path.name} to a Hugging Face folder (once)...", file=sys.stderr)
            manifest = import_gguf(catalog, args.id, path, args.type, progress, args.revision, settings.tmp_dir,
                                   as_is=args.as_is)
        else:
            manifest = import_folder(catalog, args.id, path, args.type, progress, args.revision)
    print(f"{args.id}@{manifest.revision}: {len(manifest.files)} files, {manifest.total_size} bytes")
    return 0


def _export(args: argparse.Namespace) -> int:
    from model_registry.sources.bundle import export_bundle

    with _catalog() as (catalog, _), _bar(f"export {args.id}") as progress:
        revisions = export_bundle(catalog, args.id, Path(args.output), revision=args.revision,
                                  all_revisions=args.all_revisions, progress=progress)
    print(f"wrote {args.output} ({', '.join(revisions)})")
    return 0


def _import_bundle(args: argparse.Namespace) -> int:
    from model_registry.sources.bundle import import_bundle

    with _catalog() as (catalog, _), _bar(Path(args.file).name) as progress:
        manifests = import_bundle(catalog, Path(args.file), progress)
    for m in manifests:
        print(f"{m.model_id}@{m.revision}: {len(m.files)} files verified")
    return 0


def _stored_export(args: argparse.Namespace, label: str, export: Callable[..., Any], variant: str | None) -> int:
    """Run one of the exports that store a new revision of the same model (ONNX, GGUF) and say how to serve it."""
    with _catalog() as (catalog, settings), _bar(f"{label} {args.id}") as progress:
        manifest = export(catalog, args.id, args.revision, variant, progress, settings.tmp_dir,
                          make_current=args.current)
    print(f"{args.id}@{manifest.revision}: {len(manifest.files)} files, {manifest.total_size} bytes"
          + (" (now current)" if args.current else f"; serve it with MODEL_REVISION={manifest.revision}"))
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from model_registry.sources.onnx_export import export_onnx

    print(f"exporting {args.id} to ONNX ({args.quantize or 'fp32'})...", file=sys.stderr)
    return _stored_export(args, "onnx", export_onnx, args.quantize)


def _export_gguf(args: argparse.Namespace) -> int:
    from model_registry.sources.gguf_export import export_gguf

    print(f"converting {args.id} to GGUF ({args.type}) with llama.cpp's converter...", file=sys.stderr)
    return _stored_export(args, "gguf", export_gguf, args.type)


def _rm(args: argparse.Namespace) -> int:
    with _catalog() as (catalog, _):
        if args.revision:
            catalog.delete_revision(args.id, args.revision)
        else:
            catalog.delete_model(args.id)
    print(f"removed {args.id}" + (f"@{args.revision}" if args.revision else ""))
    return 0


def _alias(args: argparse.Namespace) -> int:
    with _catalog() as (catalog, _):
        record = catalog.set_alias(args.id, args.alias, args.revision)
    print(f"{args.id}: {args.alias} -> {record.aliases[args.alias]}")
    if args.rollout:  # the running local stack moves the replicas that load this alias, one at a time
        from stack.apply_client import rollout

        return rollout(args.gateway_port, args.control)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from model_registry.fetch import fetch_model

    with _catalog() as (catalog, _), _bar(f"fetch {args.id}") as progress:
        path = fetch_model(catalog.store, args.id, args.revision, Path(args.cache_dir), progress)
    print(path)
    return 0


def add_models_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the store commands to the ``models`` sub-command group (``models_sub`` in ``stack/cli.py``)."""
    p = subparsers.add_parser("list", help="list models in the store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run(_list))

    p = subparsers.add_parser("pull", help="mirror a Hugging Face repo (HF_TOKEN, HF_ENDPOINT honoured)")
    p.add_argument("id", help="repo id, e.g. Qwen/Qwen2.5-0.5B-Instruct")
    p.add_argument("--revision", default=None, help="branch, tag or commit sha (default: main)")
    p.add_argument("--type", choices=MODEL_TYPES, default=None)
    p.add_argument("--include", action="append", default=[], help="glob of files to mirror (repeatable)")
    p.add_argument("--exclude", action="append", default=[], help="glob of files to skip (repeatable)")
    p.set_defaults(func=_run(_pull))

    p = subparsers.add_parser("import", help="import a local model folder or a .gguf file (converted once)")
    p.add_argument("path")
    p.add_argument("--id", required=True)
    p.add_argument("--type", choices=MODEL_TYPES, default=None)
    p.add_argument("--revision", default=None, help="revision name (default: fingerprint of the folder)")
    p.add_argument("--as-is", action="store_true", help="store a .gguf file itself (for the llamacpp engine)")
    p.set_defaults(func=_run(_import))

    p = subparsers.add_parser("export", help="write a model to one bundle file for an air-gapped site")
    p.add_argument("id")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--revision", default=None, help="revision or alias (default: current)")
    p.add_argument("--all-revisions", action="store_true")
    p.set_defaults(func=_run(_export))

    p = subparsers.add_parser("import-bundle", help="import a bundle written by 'export' (verifies sha256)")
    p.add_argument("file")
    p.set_defaults(func=_run(_import_bundle))

    p = subparsers.add_parser("export-onnx", help="store an embedding or rerank model's ONNX export as a new revision")
    p.add_argument("id")
    p.add_argument("--revision", default=None, help="revision or alias to export (default: current)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 quantisation")
    p.add_argument("--current", action="store_true", help="point 'current' at the export")
    p.set_defaults(func=_run(_export_onnx))

    p = subparsers.add_parser("export-gguf", help="store an LLM's GGUF conversion (llama.cpp) as a new revision")
    p.add_argument("id")
    p.add_argument("--revision", default=None, help="revision or alias to convert (default: current)")
    p.add_argument("--type", choices=OUTTYPES, default="q8_0",
                   help="GGUF tensor type (default q8_0; bf16 on AVX-512 BF16 CPUs)")
    p.add_argument("--current", action="store_true", help="point 'current' at the export")
    p.set_defaults(func=_run(_export_gguf))

    p = subparsers.add_parser("rm", help="delete a model or one revision")
    p.add_argument("id")
    p.add_argument("--revision", default=None)
    p.set_defaults(func=_run(_rm))

    p = subparsers.add_parser("alias", help="point an alias (e.g. current) at a revision")
    p.add_argument("id")
    p.add_argument("alias")
    p.add_argument("revision")
    p.add_argument("--rollout", action="store_true",
                   help="then roll the running 'model-service up' onto it (replicas whose source is this alias)")
    p.add_argument("--gateway-port", type=int, default=8080, help="with --rollout: which running stack")
    p.add_argument("--control", default=None, metavar="URL", help="with --rollout: the stack's control URL")
    p.set_defaults(func=_run(_alias))

    p = subparsers.add_parser("fetch", help="copy and verify a revision into a local cache folder")
    p.add_argument("id")
    p.add_argument("--revision", default=None, help="revision or alias (default: current)")
    p.add_argument("--cache-dir", required=True)
    p.set_defaults(func=_run(_fetch))
