"""Pickles from elsewhere (MMSA's feature files), read without letting them run code.

A pickle can name any importable callable and have it called while it loads. This unpickler admits only what a
feature pickle needs, numpy array reconstruction and plain builtins (ALLOWED_GLOBALS), and refuses anything else
by name before it is imported.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from features.errors import PipelineError

_SAFE_BUILTINS = (
    "list",
    "dict",
    "tuple",
    "set",
    "frozenset",
    "str",
    "bytes",
    "bytearray",
    "int",
    "float",
    "complex",
    "bool",
)
_NUMPY_GLOBALS = {"multiarray": ("_reconstruct", "scalar"), "numeric": ("_frombuffer",)}
ALLOWED_GLOBALS = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # _codecs.encode: bytes in protocol 2
    | {
        (f"numpy.{core}.{module}", name)
        for core in ("core", "_core")
        for module, names in _NUMPY_GLOBALS.items()
        for name in names
    }
    | {("builtins", name) for name in _SAFE_BUILTINS}
)


class PickleError(PipelineError):
    """A file that is not a pickle this project can read."""


class UnsafePickleError(PickleError):
    """A pickle that names a global outside ALLOWED_GLOBALS: it could run code, so it is not loaded."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module  # protocol-2 pickles
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: an MMSA pickle may only hold "
                "numpy arrays and plain builtins (this one could run code)"
            )
        return super().find_class(module, name)


def load_pickle(path: str | Path) -> Any:
    """Unpickle a file with the restricted unpickler (see ALLOWED_GLOBALS)."""
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f).load()
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as err:
            raise PickleError(f"{path}: not a readable pickle ({type(err).__name__}: {err})") from None
