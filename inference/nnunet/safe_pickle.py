"""Read the pickles of an nnU-Net v1 model (``plans.pkl``, ``*.model.pkl``) without running code.

A pickle names the functions it calls to rebuild its objects; a malicious one names ``os.system``.
:func:`load_plans_pickle` admits only the builtin containers and the numpy reconstructors a v1 plan
is made of, and refuses anything else by name (:class:`UnsafePickleError`).
"""

from __future__ import annotations

import io
import pickle

# (module, name) pairs a v1 plan or model info pickle may reference. numpy arrays and scalars are
# rebuilt through these functions; pickles written by numpy 1 name ``numpy.core``, numpy 2
# ``numpy._core``. ``_codecs.encode`` rebuilds bytes in protocol-2 pickles.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "range"),
        ("builtins", "complex"),
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *(
            (module, name)
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        *(
            ("numpy", name)
            for name in (
                "bool_",
                "int8",
                "int16",
                "int32",
                "int64",
                "uint8",
                "uint16",
                "uint32",
                "uint64",
                "float16",
                "float32",
                "float64",
            )
        ),
        *(
            ("numpy.dtypes", name)
            for name in (
                "BoolDType",
                "Int8DType",
                "Int16DType",
                "Int32DType",
                "Int64DType",
                "UInt8DType",
                "UInt16DType",
                "UInt32DType",
                "UInt64DType",
                "Float16DType",
                "Float32DType",
                "Float64DType",
                "StrDType",
                "BytesDType",
            )
        ),
    }
)

MAX_PICKLE_BYTES = 64 * 1024 * 1024  # a v1 plan is a few kB to a few MB


class UnsafePickleError(ValueError):
    """The pickle references something other than plain data; nothing of it was executed."""


class _PlanUnpickler(pickle.Unpickler):
    def __init__(self, stream, *, source: str):
        super().__init__(stream)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self._source} references {module}.{name}, which is not plain data (numpy arrays "
                "and scalars, dict, list, tuple, OrderedDict); refusing to load it"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source} uses persistent ids, which a v1 plan never does")


def load_plans_pickle(data: bytes, *, source: str) -> object:
    """Unpickle ``data`` (the bytes of a v1 ``.pkl`` file named ``source`` in messages) admitting
    only :data:`ALLOWED_GLOBALS`. Raises :class:`UnsafePickleError` for anything else and for
    bytes that are not a pickle."""
    if len(data) > MAX_PICKLE_BYTES:
        raise UnsafePickleError(
            f"{source} is {len(data)} bytes; a v1 plan is far smaller than {MAX_PICKLE_BYTES}"
        )
    try:
        return _PlanUnpickler(io.BytesIO(data), source=source).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise UnsafePickleError(f"{source} is not a readable pickle: {error}") from error
