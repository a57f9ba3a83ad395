"""Batch ingest: validate uploaded images as they stream in and package them.

``POST /v1/batches`` may carry thousands of images (the paper's largest hourly batch
is 2,450). Starlette's form parser keeps every small file in memory until the whole
request is read, so this package parses ``multipart/form-data`` itself, part by part:

1. each file part is spooled (in memory up to 1 MiB, then in a file under
   ``data_dir/tmp``) while it arrives;
2. when the part ends it is validated (size limits, magic bytes, Pillow ``verify()``
   and a reduced-scale decode that catches truncated JPEGs) and appended to a
   :class:`~stoic.storage.package.PackageWriter` writing a temporary tar file, then dropped;
   an archive part (``.zip``, ``.tar``, ``.tar.gz``) is expanded member by member the
   same way, refusing members whose path leaves the archive's root;
3. at the end, the tar is streamed to the object store with ``put_stream`` and the
   batch row is inserted; only then does the API answer ``202``.

So the server holds at most one image (plus one 1 MiB chunk) in memory, whatever the
batch size. Any failure removes the temporary files and the partial object and inserts
no row: a rejected upload leaves nothing behind. Errors are the typed
:class:`~stoic.errors.IngestError` subclasses, which carry the HTTP status and name the
file or field at fault.

The code is split by concern:

- :mod:`stoic.ingest.multipart`: the streaming ``multipart/form-data`` parser;
- :mod:`stoic.ingest.builder`: image/archive validation and the package tar;
- :mod:`stoic.ingest.options`: batch limits and the client's options;
- :mod:`stoic.ingest.ingestor`: the :class:`Ingestor` that runs one request end to end.
"""
