"""The REST API of the edge controller (FastAPI): see :func:`stoic.api.app.create_app`
and ``docs/api.md``. Importing this package imports no web framework; the submodules do.
"""
