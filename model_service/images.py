"""Images of a multimodal chat request: from ``image_url`` parts to checked RGB PIL images.

Clients send images as ``data:`` URLs (base64) or, where a site allows it, http(s) URLs. Everything
a client can get wrong here (too many images, a remote URL on an offline site, bad base64, bytes
that are no image, an image too big) is a 400 with a code saying which, never a 500: decoding runs
on untrusted bytes, so every failure PIL can raise is caught and named. The pixel limit is checked
on the header before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import httpx

from common.errors import InvalidRequestError
from common.protocol import ChatMessage, ImagePart
from model_service.settings import WorkerSettings


class InvalidImageError(InvalidRequestError):
    """An image part that cannot be used: undecodable, not an image, or over a limit."""

    code = "invalid_image"


@dataclass(frozen=True)
class ImageLimits:
    max_images: int
    max_bytes: int
    max_pixels: int
    allow_remote: bool
    fetch_timeout_s: float

    @classmethod
    def of(cls, settings: WorkerSettings) -> ImageLimits:
        return cls(settings.max_images, settings.max_image_bytes, settings.max_image_pixels,
                   settings.allow_remote_images, settings.image_fetch_timeout_s)


def image_urls(messages: list[ChatMessage]) -> list[str]:
    """The URLs of every image part, in the order the chat template will meet them."""
    return [p.image_url.url for m in messages if isinstance(m.content, list)
            for p in m.content if isinstance(p, ImagePart)]


async def load_images(messages: list[ChatMessage], limits: ImageLimits, http: httpx.AsyncClient | None) -> list[Any]:
    """Every image of the request as an RGB PIL image, checked against ``limits``.

    ``http`` is the worker's client for remote images (None when they are not allowed).
    """
    urls = image_urls(messages)
    if len(urls) > limits.max_images:
        raise InvalidRequestError(f"This request has {len(urls)} images; at most {limits.max_images} are "
                                  "allowed per request.", param="messages", code="too_many_images")
    images = []
    for i, url in enumerate(urls):
        data = await _image_bytes(url, i, limits, http)
        images.append(await asyncio.to_thread(open_image, data, i, limits))
    return images


async def _image_bytes(url: str, index: int, limits: ImageLimits, http: httpx.AsyncClient | None) -> bytes:
    if url.startswith("data:"):
        return decode_data_url(url, index, limits.max_bytes)
    if not url.startswith(("http://", "https://")):
        raise InvalidImageError(f"Image {index}: only data: URLs (base64) and http(s) URLs are supported.",
                                param="messages")
    if not limits.allow_remote or http is None:
        raise InvalidRequestError(
            f"Image {index}: remote image URLs are not allowed on this server (it runs offline); send the "
            "image inline as a base64 data: URL.", param="messages", code="remote_images_disabled")
    return await fetch_image(http, url, index, limits)


def decode_data_url(url: str, index: int, max_bytes: int) -> bytes:
    """The bytes of a ``data:[<type>][;base64],<data>`` URL; base64 is required (images are binary)."""
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidImageError(f"Image {index}: expected a data URL like 'data:image/png;base64,<data>'.",
                                param="messages")
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise InvalidImageError(f"Image {index} is larger than the {max_bytes} bytes allowed.", param="messages")
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError(f"Image {index}: the data URL is not valid base64.", param="messages") from None
    if not data:
        raise InvalidImageError(f"Image {index} is empty.", param="messages")
    return data


async def fetch_image(http: httpx.AsyncClient, url: str, index: int, limits: ImageLimits) -> bytes:
    """Download a remote image with the fetch timeout, stopping as soon as it passes the byte limit."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.fetch_timeout_s), http.stream("GET", url) as resp:
            if resp.status_code >= 400:
                raise InvalidImageError(f"Image {index}: fetching {url} answered HTTP {resp.status_code}.",
                                        param="messages")
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > limits.max_bytes:
                    raise InvalidImageError(f"Image {index} is larger than the {limits.max_bytes} bytes allowed.",
                                            param="messages")
                chunks.append(chunk)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise InvalidImageError(f"Image {index}: could not fetch {url}: {type(exc).__name__}.",
                                param="messages") from None
    return b"".join(chunks)


def open_image(data: bytes, index: int, limits: ImageLimits) -> Any:
    """Decode ``data`` into an RGB image; any decoding failure is the client's 400."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_bytes:
        raise InvalidImageError(f"Image {index} is larger than the {limits.max_bytes} bytes allowed.",
                                param="messages")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # from the header: nothing decoded yet
        if width * height > limits.max_pixels:
            raise InvalidImageError(f"Image {index} has {width}x{height} pixels; at most {limits.max_pixels} "
                                    "pixels are allowed.", param="messages")
        image.load()
        return image.convert("RGB")
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        raise InvalidImageError(f"Image {index} is not an image format this server can read.",
                                param="messages") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(f"Image {index} could not be decoded: {exc}", param="messages") from None
