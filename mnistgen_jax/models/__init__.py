"""Importing this package registers every model family: each module of this folder is imported
(a new family is a new file here plus its configs/<name>.py; no list to edit)."""
import importlib
import pkgutil

from mnistgen_jax.models.interface import Family, Stage1, Training, supports  # noqa: F401
from mnistgen_jax.models.registry import get, names, register  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")  # Registration side effects.
