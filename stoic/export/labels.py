"""What a classifier's label means to the formats: an animal, a person, a vehicle, or
nothing at all, and which taxon.

A site's classifier has labels of its own choosing (``fox``, ``empty``, ``human``);
MegaDetector's format needs to know which are animals, people or vehicles (its
``detection_categories``) and which mean an empty frame (no detection), and Camtrap DP
its ``observationType`` and, for animals, a ``scientificName``. The defaults follow
the common names: ``empty``/``blank``/``none``/``nothing``/``background`` are blank
frames, ``human``/``person``/``people`` people, ``vehicle``/``car``/``truck`` vehicles,
anything else an animal of no stated taxon (a common name is not a scientific name,
so none is made up). A site's label map (the ``labels:`` section of ``--meta``) names
the rest::

    labels:
      fox: Vulpes vulpes              # an animal of that taxon
      empty: blank                    # an observation type
      misfire: {observationType: unknown}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stoic.errors import InputError


class Kind(StrEnum):
    """Camtrap DP's observation types that a machine's label can mean."""

    ANIMAL = "animal"
    HUMAN = "human"
    VEHICLE = "vehicle"
    BLANK = "blank"
    UNKNOWN = "unknown"
    UNCLASSIFIED = "unclassified"


_KINDS = frozenset(k.value for k in Kind)

_DEFAULT_KINDS = {
    **dict.fromkeys(("empty", "blank", "none", "nothing", "background"), Kind.BLANK),
    **dict.fromkeys(("human", "humans", "person", "people"), Kind.HUMAN),
    **dict.fromkeys(("vehicle", "vehicles", "car", "truck"), Kind.VEHICLE),
}


@dataclass(frozen=True, slots=True)
class LabelInfo:
    kind: Kind
    scientific_name: str | None = None


@dataclass(frozen=True, slots=True)
class LabelMap:
    """A site's meaning of its labels; :meth:`of` falls back to the defaults."""

    entries: Mapping[str, LabelInfo] = field(default_factory=dict)

    def of(self, label: str) -> LabelInfo:
        if label in self.entries:
            return self.entries[label]
        return LabelInfo(_DEFAULT_KINDS.get(label.strip().lower(), Kind.ANIMAL))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> LabelMap:
        """The ``labels:`` section of a meta file (InputError naming a bad entry)."""
        entries = {}
        for label, value in raw.items():
            if isinstance(value, str) and value in _KINDS:
                entries[str(label)] = LabelInfo(Kind(value))
            elif isinstance(value, str):
                entries[str(label)] = LabelInfo(Kind.ANIMAL, value)
            elif isinstance(value, Mapping):
                kind = _kind(value.get("observationType", "animal"), label)
                name = value.get("scientificName")
                if name is not None and not isinstance(name, str):
                    raise InputError(f"labels: {label}: scientificName must be a string")
                entries[str(label)] = LabelInfo(kind, name)
            else:
                raise InputError(
                    f"labels: {label}: give a scientific name, an observation type or "
                    "{observationType, scientificName}"
                )
        return cls(entries)


def _kind(value: Any, label: str) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise InputError(
            f"labels: {label}: observationType {value!r} is not one of "
            + ", ".join(k.value for k in Kind)
        ) from None
