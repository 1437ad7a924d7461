"""Streaming ``multipart/form-data`` for component uploads.

Starlette's form parser spools whole files before the handler runs, which would defeat the size
cap and the on-the-fly digest. This reads the request body chunk by chunk into
``python_multipart``'s parser: the ``recipe`` part is kept in memory (at most the recipe size
limit plus one byte, so an oversized recipe is reported by the recipe parser), each ``artifacts``
part goes straight to a file in the upload's staging folder, hashed as it is written; its filename
is the file's relative path in the version's artifact folder (``lib/greet.py``), checked by
:meth:`~roost.hub.artifacts.Staging.open`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from roost.hub.artifacts import StagedFile, StagedWriter, Staging
from roost.hub.errors import PayloadTooLargeError, UnprocessableError
from roost.recipe import MAX_RECIPE_BYTES

logger = logging.getLogger(__name__)

#: After a 413, read (and drop) at most this much more of the body so the client sees the answer.
DRAIN_LIMIT = 64 * 1024 * 1024
ARTIFACT_FIELDS = ("artifacts", "artifact")


class MultipartUpload:
    """Feed body chunks with :meth:`feed`; then read :attr:`recipe` and :attr:`files`."""

    def __init__(self, content_type: str, staging: Staging) -> None:
        kind, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise UnprocessableError("send the component as multipart/form-data with a 'recipe' file part and "
                                     "'artifacts' file parts", code="INVALID_UPLOAD")
        self.staging = staging
        self.recipe: bytearray | None = None
        self.recipe_name = "recipe"
        self.files: list[StagedFile] = []
        self._headers: dict[str, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._kind = "ignore"
        self._writer: StagedWriter | None = None
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }, max_header_count=16, max_header_size=8192)

    def _part_begin(self) -> None:
        self._headers = {}
        self._kind = "ignore"
        self._writer = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field = bytearray()
        self._value = bytearray()

    def _headers_finished(self) -> None:
        try:
            _disposition, params = parse_options_header(self._headers.get("content-disposition", b""))
        except (UnicodeError, ValueError) as err:
            raise UnprocessableError(f"malformed Content-Disposition header: {err}", code="INVALID_UPLOAD") from err
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if name == "recipe":
            if self.recipe is not None:
                raise UnprocessableError("the upload has two 'recipe' parts", code="INVALID_UPLOAD")
            self._kind = "recipe"
            self.recipe = bytearray()
            if filename:
                self.recipe_name = filename.decode("utf-8", "replace")
        elif name in ARTIFACT_FIELDS:
            if not filename:
                raise UnprocessableError("every 'artifacts' part needs a filename", code="INVALID_UPLOAD")
            self._kind = "artifact"
            self._writer = self.staging.open(filename.decode("utf-8", "replace"))

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "recipe" and self.recipe is not None:
            room = MAX_RECIPE_BYTES + 1 - len(self.recipe)
            if room > 0:
                self.recipe += data[start:min(end, start + room)]
        elif self._kind == "artifact" and self._writer is not None:
            self._writer.write(data[start:end])

    def _part_end(self) -> None:
        if self._kind == "artifact" and self._writer is not None:
            self.files.append(self._writer.finish())
            self._writer = None

    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as err:
            raise UnprocessableError(f"malformed multipart body: {err}", code="INVALID_UPLOAD") from err

    def finish(self) -> None:
        try:
            self._parser.finalize()
        except MultipartParseError as err:
            raise UnprocessableError(f"malformed multipart body: {err}", code="INVALID_UPLOAD") from err
        if self._writer is not None:
            self._writer.abort()
            raise UnprocessableError("the multipart body ended in the middle of a file", code="INVALID_UPLOAD")
        if self.recipe is None:
            raise UnprocessableError("the upload has no 'recipe' part", code="INVALID_UPLOAD")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.abort()


async def receive_upload(content_type: str, body: AsyncIterator[bytes], staging: Staging) -> MultipartUpload:
    """Stream the body into ``staging``; on 413 drain a bounded remainder so the client reads the answer."""
    upload = MultipartUpload(content_type, staging)
    try:
        buffered = bytearray()
        async for chunk in body:
            buffered += chunk
            if len(buffered) >= 256 * 1024:
                data, buffered = bytes(buffered), bytearray()
                await anyio.to_thread.run_sync(upload.feed, data)
        if buffered:
            await anyio.to_thread.run_sync(upload.feed, bytes(buffered))
        upload.finish()
    except PayloadTooLargeError:
        upload.close()
        drained = 0
        try:
            async for chunk in body:
                drained += len(chunk)
                if drained > DRAIN_LIMIT:
                    break
        except Exception:
            logger.debug("client stopped sending after a 413")
        raise
    except BaseException:
        upload.close()
        raise
    return upload
