"""The field's own validators, offline: Camtrap DP's profile and table schemas (with
``frictionless`` where it is installed, else ``jsonschema`` on the descriptor), and
MegaDetector's ``validate_batch_results``.

The standards' files are vendored in ``tests/data`` (``tests/data/README.md`` names
their sources, versions and licences). A Camtrap DP package names its profile and
table schemas by URL, and the profile ``$ref``-s two more schemas by URL; here every
such URL is answered from the vendored copy (a ``requests`` transport for
frictionless, a ``referencing`` registry for jsonschema), so the package is validated
exactly as written, with no network.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

DATA = REPO / "tests" / "data"
CAMTRAP = DATA / "camtrap-dp"
_CAMTRAP_BASE = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/"

VENDORED: dict[str, Path] = {
    _CAMTRAP_BASE + "camtrap-dp-profile.json": CAMTRAP / "camtrap-dp-profile.json",
    _CAMTRAP_BASE + "deployments-table-schema.json": CAMTRAP / "deployments-table-schema.json",
    _CAMTRAP_BASE + "media-table-schema.json": CAMTRAP / "media-table-schema.json",
    _CAMTRAP_BASE + "observations-table-schema.json": CAMTRAP / "observations-table-schema.json",
    "https://specs.frictionlessdata.io/schemas/data-package.json": CAMTRAP / "data-package.json",
    "http://json.schemastore.org/geojson.json": CAMTRAP / "schemastore-geojson.json",
    "https://json.schemastore.org/geojson.json": CAMTRAP / "schemastore-geojson.json",
    "https://geojson.org/schema/GeoJSON.json": CAMTRAP / "GeoJSON.json",
}
"""Every URL a Camtrap DP 1.0.2 package reaches while it is validated → its copy."""

HAVE_FRICTIONLESS = importlib.util.find_spec("frictionless") is not None


def table_fields(resource: str) -> list[str]:
    """The field names of a vendored Camtrap DP table schema, in order."""
    schema = json.loads((CAMTRAP / f"{resource}-table-schema.json").read_text())
    return [f["name"] for f in schema["fields"]]


def profile_errors(descriptor: dict[str, Any]) -> list[str]:
    """``datapackage.json`` against the Camtrap DP profile (jsonschema, vendored refs)."""
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    registry: Registry[Any] = Registry().with_resources(
        (url, Resource.from_contents(json.loads(path.read_text()), DRAFT4))
        for url, path in VENDORED.items()
    )
    profile = json.loads(VENDORED[_CAMTRAP_BASE + "camtrap-dp-profile.json"].read_text())
    validator = Draft4Validator(
        profile, registry=registry, format_checker=Draft4Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(descriptor)
    ]


def frictionless_errors(package_dir: Path) -> list[str]:
    """``frictionless validate`` of the package in ``package_dir``: its descriptor
    against the profile, each CSV against its table schema, and the foreign keys."""
    import requests
    from frictionless import system, validate
    from urllib3.response import HTTPResponse

    class Vendored(requests.adapters.BaseAdapter):
        def send(self, request: Any, **kwargs: Any) -> requests.Response:
            path = VENDORED.get(request.url)
            if path is None:
                raise AssertionError(f"the validation reached for {request.url}: vendor it")
            response = requests.Response()
            response.status_code, response.url = 200, request.url
            response.raw = HTTPResponse(
                body=io.BytesIO(path.read_bytes()), status=200, preload_content=False
            )
            return response

        def close(self) -> None:
            pass

    session = requests.Session()
    session.mount("http://", Vendored())
    session.mount("https://", Vendored())
    descriptor = json.loads((package_dir / "datapackage.json").read_text())
    with system.use_context(http_session=session):
        report = validate(descriptor, basepath=str(package_dir))
    errors = [f"{e.type}: {e.note}" for e in report.errors]
    for task in report.tasks:
        errors += [f"{task.name}: {e.type}: {e.note}" for e in task.errors]
    return errors


def megadetector_errors(document: dict[str, Any]) -> list[str]:
    """MegaDetector's own ``validate_batch_results`` (vendored) on a document."""
    sys.path.insert(0, str(DATA / "megadetector"))
    try:
        from validate_batch_results import validate_batch_results
    finally:
        sys.path.remove(str(DATA / "megadetector"))
    results = validate_batch_results(document)["validation_results"]
    return list(results["errors"]) + list(results["warnings"])
