"""S3 backend through the ``minio`` SDK (MinIO in compose, SeaweedFS in tests, any S3 in production).

A single PUT or a completed multipart upload is atomic in S3, so half-written objects are never
visible. Failures to reach the server or wrong credentials become ``StorageError`` with the S3 error
code and the endpoint only: the secret key never appears in a message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from model_registry.errors import StorageError
from model_registry.settings import ModelRegistrySettings
from model_registry.storage import CHUNK, ObjectInfo, Storage

MISSING = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


class S3Storage(Storage):
    def __init__(self, endpoint: str, access_key: str | None, secret_key: str | None, bucket: str, *,
                 secure: bool = False, region: str | None = None, part_size: int = 16 * 1024 * 1024,
                 timeout_s: float = 30.0) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.part_size = part_size
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5.0, read=timeout_s), maxsize=16,
            retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure,
                            region=region, http_client=http)
        self._http = http

    @classmethod
    def from_settings(cls, settings: ModelRegistrySettings) -> S3Storage:
        host, secure = settings.s3_host_and_secure()
        secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
        return cls(host, settings.s3_access_key, secret, settings.s3_bucket, secure=secure,
                   region=settings.s3_region, part_size=settings.s3_part_size)

    def describe(self) -> str:
        return f"s3 bucket '{self.bucket}' at {self.endpoint}"

    def _fail(self, exc: Exception, action: str) -> StorageError:
        if isinstance(exc, S3Error):
            detail = f"S3 error {exc.code}"
            if exc.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                detail += " (check MINIO_SVC_USER / MINIO_SVC_PASSWORD)"
        else:
            detail = type(exc).__name__
        return StorageError(f"Object storage {self.describe()} failed to {action}: {detail}.")

    def check(self) -> None:
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            raise self._fail(exc, "open the bucket") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._fail(exc, "answer") from exc

    def put_stream(self, key: str, stream: BinaryIO, size: int) -> None:
        try:
            self.client.put_object(self.bucket, key, stream, length=size,
                                   part_size=self.part_size if size < 0 or size > self.part_size else 0)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._fail(exc, f"store {key}") from exc

    def iter_chunks(self, key: str, offset: int = 0, length: int | None = None,
                    chunk_size: int = CHUNK) -> Iterator[bytes]:
        if length == 0:
            return iter(())
        try:
            response = self.client.get_object(self.bucket, key, offset=offset, length=length or 0)
        except S3Error as exc:
            if exc.code in MISSING:
                raise KeyError(key) from exc
            raise self._fail(exc, f"read {key}") from exc
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._fail(exc, f"read {key}") from exc
        return self._chunks(response, chunk_size)

    @staticmethod
    def _chunks(response: urllib3.BaseHTTPResponse, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from response.stream(chunk_size)
        finally:
            response.close()
            response.release_conn()

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in MISSING:
                return None
            raise self._fail(exc, f"stat {key}") from exc
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._fail(exc, f"stat {key}") from exc
        return ObjectInfo(key, int(info.size or 0))

    def list(self, prefix: str, recursive: bool = True) -> list[str]:
        try:
            return sorted(o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix or None,
                                                                           recursive=recursive)
                          if o.object_name)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._fail(exc, f"list {prefix or '/'}") from exc

    def delete_prefix(self, prefix: str) -> int:
        if not prefix.strip("/"):
            raise ValueError("refusing to delete the whole store")
        keys = self.list(prefix, recursive=True) if prefix.endswith("/") else (
            [prefix] if self.stat(prefix) else [])
        if not keys:
            return 0
        try:
            errors = list(self.client.remove_objects(self.bucket, [DeleteObject(k) for k in keys]))
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            raise self._fail(exc, f"delete {prefix}") from exc
        if errors:
            raise StorageError(f"Object storage {self.describe()} failed to delete {len(errors)} object(s) "
                               f"under {prefix}: {errors[0].code}.")
        return len(keys)

    def close(self) -> None:
        self._http.clear()
