"""Model families by name (see interface.py for what a family is and may implement)."""
from __future__ import annotations

from mnistgen_jax.models.interface import Family

_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
  if family.name in _FAMILIES:
    raise ValueError(f"model family {family.name!r} is registered twice")
  _FAMILIES[family.name] = family
  return family


def names() -> list[str]:
  return sorted(_FAMILIES)


def get(name: str) -> Family:
  if name not in _FAMILIES:
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
  return _FAMILIES[name]
