"""A local Hugging Face Hub that serves one real model folder as a repo, for pulls that cannot reach the
internet: the two endpoints ``huggingface_hub`` calls to mirror a repo (``/api/models/{repo}/revision/{rev}``
with each file's size, git blob id and, for LFS files, sha256; ``/{repo}/resolve/{rev}/{path}`` with
``X-Repo-Commit``, ``ETag`` and ``Content-Length``, GET and HEAD). Point a model registry at it with
``MODEL_REGISTRY_HF_ENDPOINT`` (and ``HF_HUB_OFFLINE=0`` for that process).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tests.helpers.servers import serve_in_thread

LFS_FROM_BYTES = 10 * 1024 * 1024  # files this large are LFS files on the Hub: their ETag is the sha256


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FolderHub:
    """``repo`` at one commit (``sha``, also reachable as ``main``) holding every file of ``folder``."""

    repo: str
    folder: Path
    sha: str = hashlib.sha1(b"folder-hub").hexdigest()
    url: str = ""
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.files: dict[str, tuple[Path, int, str]] = {}  # path -> (file, size, ETag)
        self.siblings: list[dict[str, object]] = []
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            data, name = path.read_bytes(), path.relative_to(self.folder).as_posix()
            sibling: dict[str, object] = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
            etag = git_blob_id(data)
            if len(data) >= LFS_FROM_BYTES:
                etag = hashlib.sha256(data).hexdigest()
                sibling["lfs"] = {"size": len(data), "sha256": etag, "pointerSize": 134}
            self.files[name] = (path, len(data), etag)
            self.siblings.append(sibling)

    @property
    def size(self) -> int:
        return sum(size for _, size, _ in self.files.values())

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.requests.append(f"{request.method} {path}")
        if path in (f"/api/models/{self.repo}/revision/main", f"/api/models/{self.repo}/revision/{self.sha}"):
            return JSONResponse({"id": self.repo, "sha": self.sha, "private": False,
                                 "siblings": self.siblings})
        for rev in ("main", self.sha):
            prefix = f"/{self.repo}/resolve/{rev}/"
            if path.startswith(prefix) and path[len(prefix):] in self.files:
                file, size, etag = self.files[path[len(prefix):]]
                headers = {"X-Repo-Commit": self.sha, "ETag": f'"{etag}"'}
                if request.method == "HEAD":
                    return Response(b"", headers={**headers, "Content-Length": str(size)})
                return FileResponse(file, headers=headers, media_type="application/octet-stream")
        return JSONResponse({"error": "not found"}, 404, headers={"X-Error-Code": "EntryNotFound"})


@contextmanager
def folder_hub(repo: str, folder: Path) -> Iterator[FolderHub]:
    """:class:`FolderHub` on a free loopback port for the block."""
    hub = FolderHub(repo, folder)
    app = Starlette(routes=[Route("/{path:path}", hub.handle, methods=["GET", "HEAD"])])
    with serve_in_thread(app) as url:
        hub.url = url
        yield hub
