"""What a site knows and stoic cannot: the ``--meta`` file of ``stoic export``.

A Camtrap DP package must say who made it, about which project, where each camera
stood and in which time zone its clock ran. None of that is in an image, so a site
writes it once, in YAML (or JSON)::

    package:                      # merged into datapackage.json
      title: Sedgwick camera traps, spring 2024
      contributors: [{title: Jane Doe, role: contact, email: jane@example.org}]
      project: {title: Sedgwick mammals, samplingDesign: targeted,
                captureMethod: [activityDetection]}
      licenses: [{name: CC0-1.0, scope: data}, {name: CC-BY-4.0, scope: media}]
    timezone: America/Los_Angeles # for capture times the cameras wrote without offset
    media_base: ""                # prefix of media.filePath (a URL, or "" for paths
                                  # relative to the package's folder)
    deployments:                  # per deployment (its folder name): Camtrap DP columns
      cam01: {latitude: 34.69, longitude: -120.04, locationName: North ridge}
      cam02: {latitude: 34.70, longitude: -120.05, timezone: "-07:00"}
    labels:                       # what the classifier's labels mean (stoic.export.labels)
      fox: Vulpes vulpes
      empty: blank

Everything is optional; what a publishable package still lacks is reported by the
export (:func:`stoic.export.camtrap_dp.camtrap_package`), not guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stoic.datafiles import read_yaml
from stoic.errors import InputError
from stoic.export.labels import LabelMap

DEPLOYMENT_FIELDS = (
    "deploymentID",
    "locationID",
    "locationName",
    "latitude",
    "longitude",
    "coordinateUncertainty",
    "deploymentStart",
    "deploymentEnd",
    "setupBy",
    "cameraID",
    "cameraModel",
    "cameraDelay",
    "cameraHeight",
    "cameraDepth",
    "cameraTilt",
    "cameraHeading",
    "detectionDistance",
    "timestampIssues",
    "baitUse",
    "featureType",
    "habitat",
    "deploymentGroups",
    "deploymentTags",
    "deploymentComments",
)
"""The columns of Camtrap DP 1.0.2's ``deployments.csv``, in the schema's order."""

_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def parse_timezone(name: str | int, where: str) -> tzinfo:
    """``+02:00``, ``-0700``, ``UTC`` or an IANA name (``Europe/Brussels``). An integer
    is minutes: YAML 1.1 reads an unquoted ``-07:00`` as the sexagesimal -420."""
    if isinstance(name, int):
        return timezone(timedelta(minutes=name))
    if m := _OFFSET.fullmatch(name.strip()):
        sign = -1 if m[1] == "-" else 1
        return timezone(sign * timedelta(hours=int(m[2]), minutes=int(m[3])))
    if name.strip().upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"{where}: unknown time zone {name!r}") from None


@dataclass(frozen=True, slots=True)
class DeploymentMeta:
    """One deployment's Camtrap DP columns (as given) and its cameras' time zone."""

    columns: Mapping[str, Any] = field(default_factory=dict)
    timezone: tzinfo | None = None


@dataclass(frozen=True, slots=True)
class ExportMeta:
    package: Mapping[str, Any] = field(default_factory=dict)
    deployments: Mapping[str, DeploymentMeta] = field(default_factory=dict)
    timezone: tzinfo | None = None
    media_base: str = ""
    labels: LabelMap = field(default_factory=LabelMap)

    def zone(self, deployment: str) -> tzinfo | None:
        d = self.deployments.get(deployment)
        return d.timezone if d is not None and d.timezone is not None else self.timezone


def _section(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: {key} must be a mapping")
    return value


def _zone(value: Any, where: str) -> tzinfo | None:
    if value is None or value == "":
        return None
    return parse_timezone(value if isinstance(value, int) else str(value), where)


def meta_from_mapping(raw: Mapping[str, Any], where: str = "meta") -> ExportMeta:
    """An :class:`ExportMeta` from a parsed meta file (InputError naming a bad key)."""
    unknown = set(raw) - {"package", "timezone", "media_base", "deployments", "labels"}
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}")
    package = dict(_section(raw, "package", where))
    for reserved in ("resources", "profile"):
        if reserved in package:
            raise InputError(f"{where}: package.{reserved} is written by stoic; remove it")
    deployments = {}
    for name, columns in _section(raw, "deployments", where).items():
        if not isinstance(columns, Mapping):
            raise InputError(f"{where}: deployments.{name} must be a mapping of columns")
        bad = set(columns) - set(DEPLOYMENT_FIELDS) - {"timezone"}
        if bad:
            raise InputError(
                f"{where}: deployments.{name}: {sorted(bad)} are not Camtrap DP deployment columns"
            )
        zone = columns.get("timezone")
        deployments[str(name)] = DeploymentMeta(
            {k: v for k, v in columns.items() if k != "timezone"},
            _zone(zone, f"{where}: deployments.{name}"),
        )
    zone = raw.get("timezone")
    media_base = raw.get("media_base") or ""
    if not isinstance(media_base, str):
        raise InputError(f"{where}: media_base must be a string")
    return ExportMeta(
        package=package,
        deployments=deployments,
        timezone=_zone(zone, f"{where}: timezone"),
        media_base=media_base,
        labels=LabelMap.from_mapping(_section(raw, "labels", where)),
    )


def load_meta(path: Path) -> ExportMeta:
    """Read a meta file (YAML or JSON)."""
    raw = read_yaml(path, InputError, syntax="not YAML or JSON")
    if raw is None:
        return ExportMeta()
    if not isinstance(raw, Mapping):
        raise InputError(f"{path}: expected a mapping at the top")
    return meta_from_mapping(raw, str(path))
