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

Nothing a client sends is kept without a bound: a non-file field whose name is not an
option is refused the moment its headers end (not after the whole body), the number and
total size of the fields are capped (``api.max_form_fields``, ``api.max_form_bytes``),
and so are the headers of each part (:data:`MAX_PART_HEADER_BYTES`). It also digests
what it parsed (each file's name, size and SHA-256, each field) as it goes, so a
repeated ``Idempotency-Key`` can be checked against the request it first came with,
whatever multipart boundary the client picked this time.
"""

from __future__ import annotations

import codecs
import hashlib
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from stoic.errors import InvalidField

MAX_PART_HEADER_BYTES = 16 * 1024
"""Bytes of one part's headers (names and values together)."""

MAX_FIELD_BYTES = 64 * 1024
"""Bytes of one non-file form field."""


FILES_FIELD = "files"
"""The name the API documents for file parts; as a plain field it is a mistake."""


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)
    file: tempfile.SpooledTemporaryFile[bytes] | None = None
    size: int = 0
    header_bytes: int = 0
    sha256: Any = None
    fields_before: dict[str, str] = field(default_factory=dict)
    """The form fields that came before this file part (``skip_invalid`` applies to
    the files after it, however the body was cut into chunks)."""


class MultipartStream:
    """Feeds ``python-multipart``'s push parser and hands out finished parts.

    Form fields are kept (at most ``max_fields`` of them, ``max_field_bytes`` in all,
    each named in ``known_fields``); file parts are spooled and returned by
    :meth:`feed` as soon as they end, so the caller can validate and drop them before
    the next one arrives. Each file part carries the fields that preceded it.
    """

    MAX_FIELD_BYTES = MAX_FIELD_BYTES

    def __init__(
        self,
        content_type: str,
        spool: Callable[[], Any],
        *,
        known_fields: Collection[str] | None = None,
        max_fields: int = 16,
        max_field_bytes: int = 64 * 1024,
    ) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        ctype, params = parse_options_header(content_type)
        if ctype != b"multipart/form-data":
            raise InvalidField(
                f"Content-Type must be multipart/form-data, not {content_type[:100]!r}",
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
        self._known = None if known_fields is None else frozenset(known_fields)
        self._max_fields = max_fields
        self._max_field_bytes = max_field_bytes
        self._field_bytes = 0
        self._n_fields = 0
        self._part = _Part()
        self._hname = b""
        self._hvalue = b""
        self.fields: dict[str, str] = {}
        self.files: list[tuple[str, int, str]] = []
        """(filename, size, SHA-256 hex) of every file part, in order."""
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

    def _header_bytes(self, n: int) -> None:
        self._part.header_bytes += n
        if self._part.header_bytes > MAX_PART_HEADER_BYTES:
            raise InvalidField(
                f"a multipart part's headers are over {MAX_PART_HEADER_BYTES} bytes",
                field="body",
            )

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes(end - start)
        self._hname += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_bytes(end - start)
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
            self._part.fields_before = dict(self.fields)
            self._part.sha256 = hashlib.sha256()
            self._part.file = self._spool()
            self._open.append(self._part.file)
            return
        if self._part.name == FILES_FIELD:
            raise InvalidField(
                f"{FILES_FIELD!r} must be a file part with a file name: choose at least one image",
                field=FILES_FIELD,
            )
        # A field: refused now if it is not an option, rather than after the body.
        if self._known is not None and self._part.name not in self._known:
            name = self._part.name[:100]
            raise InvalidField(
                f"unknown field {name!r}; expected one of {sorted(self._known)}", field=name
            )
        self._n_fields += 1
        if self._n_fields > self._max_fields:
            raise InvalidField(
                f"more than {self._max_fields} form fields (api.max_form_fields)", field="body"
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.file is not None:
            chunk = data[start:end]
            part.file.write(chunk)
            part.sha256.update(chunk)
            part.size += end - start
        else:
            self._field_bytes += end - start
            if self._field_bytes > self._max_field_bytes:
                raise InvalidField(
                    f"form fields are over {self._max_field_bytes} bytes (api.max_form_bytes)",
                    field=part.name[:100],
                )
            part.data.extend(data[start:end])
            if len(part.data) > self.MAX_FIELD_BYTES:
                raise InvalidField(
                    f"form field {part.name[:100]!r} is too long", field=part.name[:100]
                )

    def _on_part_end(self) -> None:
        part = self._part
        if part.file is None:
            if part.name in self.fields:
                raise InvalidField(
                    f"form field {part.name[:100]!r} is given more than once", field=part.name[:100]
                )
            self.fields[part.name] = self._decode(bytes(part.data))
        elif not part.filename:
            # An empty file input of a browser form: a part with filename="" and no bytes.
            if part.size:
                raise InvalidField(
                    "a file part has an empty file name; name every file", field=part.name[:100]
                )
            self._open.remove(part.file)
            part.file.close()
        else:
            self.files.append((part.filename, part.size, part.sha256.hexdigest()))
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
