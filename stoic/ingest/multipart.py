"""Streaming ``multipart/form-data`` parser for batch uploads.

``POST /v1/batches`` may carry thousands of images (the paper's largest hourly batch
is 2,450). Starlette's form parser keeps every small file in memory until the whole
request is read, so the ingest path parses the body itself, part by part, with
``python-multipart``'s push parser: each file part is spooled (in memory up to
:data:`~stoic.ingest.builder.SPOOL_BYTES`, then in a file under ``data_dir/tmp``) while
it arrives and handed back the moment it ends, so the caller can validate it and drop
it before the next one arrives. The server therefore holds at most one image (plus one
chunk) in memory, whatever the batch size.

This module knows nothing about images: it only splits the body into small form fields
and spooled file parts, raising :class:`~stoic.errors.InvalidField` for a malformed body.
"""

from __future__ import annotations

import codecs
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stoic.errors import InvalidField


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)
    file: tempfile.SpooledTemporaryFile[bytes] | None = None
    size: int = 0


class MultipartStream:
    """Feeds ``python-multipart``'s push parser and hands out finished parts.

    Form fields are kept (they are small and bounded); file parts are spooled and
    returned by :meth:`feed` as soon as they end, so the caller can validate and drop
    them before the next one arrives.
    """

    MAX_FIELD_BYTES = 64 * 1024

    def __init__(self, content_type: str, spool: Callable[[], Any]) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        ctype, params = parse_options_header(content_type)
        if ctype != b"multipart/form-data":
            raise InvalidField(
                f"Content-Type must be multipart/form-data, not {content_type!r}",
                field="Content-Type",
            )
        boundary = params.get(b"boundary")
        if not boundary:
            raise InvalidField("multipart/form-data without a boundary", field="Content-Type")
        charset = params.get(b"charset", b"utf-8").decode("latin-1")
        try:
            self._charset = codecs.lookup(charset).name
        except LookupError:
            self._charset = "latin-1"
        self._parse_options = parse_options_header
        self._spool = spool
        self._part = _Part()
        self._hname = b""
        self._hvalue = b""
        self.fields: dict[str, str] = {}
        self._done: list[_Part] = []
        self._open: list[Any] = []
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
            },
        )

    def _decode(self, raw: bytes) -> str:
        return raw.decode(self._charset, errors="replace")

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._hname.lower()] = self._hvalue
        self._hname, self._hvalue = b"", b""

    def _on_headers_finished(self) -> None:
        _, options = self._parse_options(self._part.headers.get(b"content-disposition"))
        if b"name" not in options:
            raise InvalidField(
                "a multipart part has no name in its Content-Disposition",
                field="Content-Disposition",
            )
        self._part.name = self._decode(options[b"name"])
        if b"filename" in options:
            self._part.filename = self._decode(options[b"filename"])
            self._part.file = self._spool()
            self._open.append(self._part.file)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.file is not None:
            part.file.write(data[start:end])
            part.size += end - start
        else:
            part.data.extend(data[start:end])
            if len(part.data) > self.MAX_FIELD_BYTES:
                raise InvalidField(f"form field {part.name!r} is too long", field=part.name)

    def _on_part_end(self) -> None:
        part = self._part
        if part.file is None:
            self.fields[part.name] = self._decode(bytes(part.data))
        else:
            self._done.append(part)

    def feed(self, chunk: bytes) -> list[_Part]:
        """Parse a chunk; return the file parts it completed (caller closes them)."""
        from python_multipart.exceptions import FormParserError

        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InvalidField(f"malformed multipart body: {exc}", field="body") from None
        done, self._done = self._done, []
        for part in done:
            self._open.remove(part.file)
        return done

    def finish(self) -> None:
        self._parser.finalize()
        if self._open:
            raise InvalidField("the multipart body ended in the middle of a file", field="body")

    def close(self) -> None:
        for f in self._open:
            f.close()
        self._open.clear()
        for part in self._done:
            if part.file is not None:
                part.file.close()
        self._done.clear()
