"""Read weight pickles (Detectron2 / Caffe2 ``.pkl``) without running anything they name.

Detectron2's model zoo ships ``.pkl`` files: Python pickles of dicts holding numpy arrays
(``model_final_*.pkl``: ``{"model": {name: ndarray}, "__author__": ...}``; ImageNet
``R-50.pkl``: ``{caffe2_name: ndarray}``, often written by Python 2). A pickle can name any
importable callable, so :func:`load_restricted_pickle` uses an unpickler whose ``find_class``
admits only what such files need: numpy's array reconstruction, ``ndarray``, ``dtype`` and
numpy scalars, ``collections.OrderedDict``, and ``_codecs.encode`` restricted to latin-1 text
(how Python 3 writes bytes at pickle protocol 2). Dicts, lists, tuples, strings, bytes and
numbers need no lookup. Anything else (``os.system``, ``builtins.eval``, a custom class) stops
the load before it is called, with :class:`UnsafePickleError`; persistent ids are refused too.
"""

from __future__ import annotations

import collections
import io
import pickle
from typing import IO, Any

from detlab.utils.errors import UserError

__all__ = ["UnsafePickleError", "load_restricted_pickle"]


class UnsafePickleError(UserError):
    """The pickle names something other than numpy arrays and plain containers."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it (bytes stored as latin-1 text), only."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise UnsafePickleError(
            f"The pickle asks to encode {type(text).__name__} with {encoding!r}; weight pickles "
            "only encode bytes as latin-1 text (nothing in the file was run)."
        )
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:  # numpy >= 2 moved the implementation to numpy._core
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_bytes,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    # numpy >= 1.25 pickles dtypes by their class (numpy.dtypes.Float32DType, ...)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            obj = getattr(dtypes, name)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                allowed[("numpy.dtypes", name)] = obj
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], what: str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles hold byte strings
        self._allowed = _numpy_globals()
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self._what} is refused: its pickle names {module}.{name}, and detlab reads "
                "only numpy arrays, dicts, lists, tuples, strings and numbers from .pkl files "
                "(nothing in the file was run)."
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"{self._what} is refused: its pickle uses persistent ids, which weight pickles "
            "do not need (nothing in the file was run)."
        )


def load_restricted_pickle(source: str | bytes | IO[bytes], what: str = "The pickle") -> Any:
    """Unpickle a file path, bytes or binary file, admitting only numpy arrays and containers.

    ``what`` names the file in error messages. Raises :class:`UnsafePickleError` for a pickle
    that names anything else, :class:`~detlab.utils.errors.UserError` for a damaged one.
    """
    if isinstance(source, bytes):
        stream: IO[bytes] = io.BytesIO(source)
    elif isinstance(source, str):
        stream = open(source, "rb")  # noqa: SIM115 - closed below
    else:
        stream = source
    try:
        return _RestrictedUnpickler(stream, what).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{what} is not a readable pickle ({type(err).__name__}: {err}).") from None
    finally:
        if isinstance(source, str):
            stream.close()
