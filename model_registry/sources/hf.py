"""Mirror a Hugging Face repo (or a Hub-compatible mirror at ``HF_ENDPOINT``) into the store.

The requested revision (branch, tag or sha) is resolved once to its commit sha and every file is
downloaded at that sha, so a branch moving mid-download cannot mix two commits. LFS files are checked
against the Hub's sha256 and small git files against their git blob id before they count as stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.records import ModelType
from model_registry.catalog import Catalog
from model_registry.errors import ChecksumError, SourceError
from model_registry.ids import validate_alias, validate_file_path
from model_registry.ingest import Progress, RevisionWriter
from model_registry.records import Manifest

SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubConfig:
    endpoint: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print the token
        return f"HubConfig(endpoint={self.endpoint!r}, token={'set' if self.token else None})"


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None  # LFS files only
    blob_id: str | None  # git sha1 of the blob


def _hub_errors() -> tuple[type[BaseException], ...]:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    return HfHubHTTPError, OfflineModeIsEnabled, httpx2.HTTPError, OSError, ValueError


def resolve_repo(hub: HubConfig, repo_id: str, revision: str | None, allow: list[str] | None,
                 ignore: list[str] | None) -> tuple[str, list[HubFile]]:
    """The commit sha of ``revision`` and the files to mirror (after allow/ignore patterns)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import filter_repo_objects

    if constants.is_offline_mode():
        raise SourceError("Cannot download from Hugging Face: HF_HUB_OFFLINE is set for the registry process.")
    api = HfApi(endpoint=hub.endpoint, token=hub.token or None)
    try:
        info = api.model_info(repo_id, revision=revision or "main", files_metadata=True)
    except _hub_errors() as exc:
        raise SourceError(f"Hugging Face lookup of '{repo_id}' at revision '{revision or 'main'}' failed: "
                          f"{type(exc).__name__}: {_first_line(exc)}") from exc
    sha = str(info.sha or "")
    if not SHA1.match(sha):
        raise SourceError(f"Hugging Face did not return a commit sha for '{repo_id}' ({revision or 'main'}).")
    siblings = list(filter_repo_objects(info.siblings or [], allow_patterns=allow, ignore_patterns=ignore,
                                        key=lambda s: s.rfilename))
    files = [HubFile(path=validate_file_path(s.rfilename), size=int(s.lfs.size if s.lfs else s.size or 0),
                     sha256=s.lfs.sha256 if s.lfs else None, blob_id=s.blob_id) for s in siblings]
    if not files:
        raise SourceError(f"No files of '{repo_id}' match the allow/ignore patterns.")
    return sha, files


def download_hf(catalog: Catalog, hub: HubConfig, model_id: str, revision: str | None = None,
                model_type: ModelType | None = None, allow: list[str] | None = None,
                ignore: list[str] | None = None, progress: Progress | None = None, tmp_dir: Path | None = None,
                on_resolved: Callable[[str], None] | None = None) -> Manifest:
    """Resolve, download each file at the pinned sha into a temp folder, verify, store, then commit."""
    progress = progress or Progress()
    sha, files = resolve_repo(hub, model_id, revision, allow, ignore)
    if on_resolved:
        on_resolved(sha)
    progress.set_totals(len(files), sum(f.size for f in files))
    if catalog.is_complete(model_id, sha):
        return catalog.manifest(model_id, sha)
    writer = RevisionWriter(catalog, model_id, sha, progress, count_bytes=False)
    staging = Path(tempfile.mkdtemp(prefix="hf-", dir=tmp_dir))
    try:
        for f in files:
            if f.sha256 and writer.already_stored(f.path, f.size, f.sha256):
                continue
            local = _download(hub, model_id, sha, f, staging, progress)
            _check_blob(f, local)
            writer.store_file(f.path, local, f.sha256, where=f"Hugging Face {model_id}@{sha[:12]}")
            local.unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    aliases = []
    if revision and revision != sha:
        with contextlib.suppress(Exception):
            aliases.append(validate_alias(revision))
    source = {"kind": "huggingface", "repo_id": model_id, "endpoint": hub.endpoint or "https://huggingface.co",
              "requested_revision": revision or "main", "commit": sha,
              "allow_patterns": allow, "ignore_patterns": ignore}
    manifest, _ = writer.commit(model_type, source, aliases=aliases)
    return manifest


def _download(hub: HubConfig, repo_id: str, sha: str, f: HubFile, staging: Path, progress: Progress) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, f.path, revision=sha, local_dir=staging / "files",
                               cache_dir=staging / "cache", token=hub.token or None, endpoint=hub.endpoint,
                               tqdm_class=_progress_bar(progress))
    except _hub_errors() as exc:
        raise SourceError(f"Downloading '{f.path}' of '{repo_id}' failed: {type(exc).__name__}: "
                          f"{_first_line(exc)}") from exc
    return Path(str(path))


def _check_blob(f: HubFile, local: Path) -> None:
    """Non-LFS files have no sha256 on the Hub, but their git blob id is a sha1 we can check."""
    if f.sha256 or not f.blob_id or not SHA1.match(f.blob_id):
        return
    digest = hashlib.sha1(f"blob {local.stat().st_size}\0".encode())  # git blob ids are sha1
    with open(local, "rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(chunk)
    if digest.hexdigest() != f.blob_id:
        raise ChecksumError(f.path, f"git blob {f.blob_id}", f"git blob {digest.hexdigest()}",
                            where="Hugging Face download")


def _progress_bar(progress: Progress) -> Any:
    """A silent tqdm class that forwards downloaded bytes to the job's progress."""
    from tqdm.auto import tqdm

    class _Bar(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            progress.add_bytes(int(n or 0))
            return super().update(n)

    return _Bar


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
