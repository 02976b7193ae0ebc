"""Read ``torch.save`` checkpoints (e.g. Lightning ``weights.ckpt``) without running their code.

A pickle is a small program: ``GLOBAL os system`` + ``REDUCE`` runs ``os.system(...)`` at load
time. ``torch.load(weights_only=True)`` blocks that but also refuses Lightning checkpoints,
whose ``hyper_parameters`` hold omegaconf objects. This module reads the zip archive itself and
unpickles ``data.pkl`` with a restricted unpickler:

* a short allow-list of globals resolves to real, harmless objects: containers
  (``dict``, ``list``, ``OrderedDict``, ...), ``torch.Size``, dtypes, storage types and our own
  re-implementations of torch's tensor rebuild functions;
* globals of known data-only libraries (omegaconf, typing, Lightning, numpy, ...) become inert
  :class:`Placeholder` classes that only record their arguments and state;
* anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) is refused with
  :class:`UnsafeCheckpointError`, before it could be called.

Tensor bytes are read from ``<archive>/data/<key>``; tensors that share a storage in the file
(tied weights) share it after loading.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import zipfile
from collections import OrderedDict, defaultdict
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CheckpointFormatError",
    "Placeholder",
    "UnsafeCheckpointError",
    "load_torch_checkpoint",
    "restricted_loads",
]

PathLike = str | os.PathLike[str]

# Old torch (< 1.6) files start with a pickled magic number instead of being a zip archive.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The pickle references a global that is not on the allow-list; nothing was executed."""


class CheckpointFormatError(ValueError):
    """The file is not a readable ``torch.save`` zip archive."""


# -- inert placeholders -------------------------------------------------------------------------


class Placeholder:
    """Inert stand-in for an instance of a class we do not import (e.g. omegaconf DictConfig).

    It records constructor arguments, pickled state and appended/set items, and does nothing
    else: it is not callable and has no behaviour driven by its contents.
    """

    __slots__ = ("_args", "_kwargs", "_state", "_items", "_list")
    _qualname: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        obj = super().__new__(cls)
        object.__setattr__(obj, "_args", args)
        object.__setattr__(obj, "_kwargs", kwargs)
        object.__setattr__(obj, "_state", None)
        object.__setattr__(obj, "_items", {})
        object.__setattr__(obj, "_list", [])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_state", state)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"placeholder for {self._qualname} is read-only")

    def __setitem__(self, key: Any, value: Any) -> None:
        self._items[key] = value

    def append(self, value: Any) -> None:
        """Record an item (pickle APPEND)."""
        self._list.append(value)

    def extend(self, values: Any) -> None:
        """Record items (pickle APPENDS)."""
        self._list.extend(values)

    @property
    def qualname(self) -> str:
        """``module.name`` of the class this stands in for."""
        return self._qualname

    @property
    def args(self) -> tuple[Any, ...]:
        """Positional arguments the pickle passed to the constructor."""
        return self._args

    @property
    def state(self) -> Any:
        """State the pickle passed to ``__setstate__`` (BUILD)."""
        return self._state

    def __repr__(self) -> str:
        return f"<placeholder {self._qualname}>"


_PLACEHOLDER_MODULES = (
    "omegaconf",
    "typing",
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "hydra",
    "numpy",
    "pathlib",
    "argparse",
)


def _placeholder_class(module: str, name: str) -> type[Placeholder]:
    return type(name, (Placeholder,), {"__slots__": (), "_qualname": f"{module}.{name}"})


# -- tensor rebuilding --------------------------------------------------------------------------


class _Storage:
    """A storage read from the archive, as a flat tensor of its dtype."""

    __slots__ = ("flat",)

    def __init__(self, flat: Tensor) -> None:
        self.flat = flat


class _StorageType:
    """What ``torch.FloatStorage`` & co. resolve to: only carries the element dtype."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}


def _check_ints(what: str, values: Any) -> tuple[int, ...]:
    if not isinstance(values, tuple | list | torch.Size) or not all(
        isinstance(v, int) for v in values
    ):
        raise pickle.UnpicklingError(f"malformed tensor record: {what} = {values!r}")
    return tuple(values)


class _RebuildTensorV2:
    """Safe ``torch._utils._rebuild_tensor_v2``: a strided view of an archive storage."""

    __slots__ = ()

    def __call__(
        self,
        storage: Any,
        storage_offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        backward_hooks: Any = None,
        metadata: Any = None,
    ) -> Tensor:
        if not isinstance(storage, _Storage) or not isinstance(storage_offset, int):
            raise pickle.UnpicklingError("malformed tensor record (storage / offset)")
        shape = _check_ints("size", size)
        strides = _check_ints("stride", stride)
        if len(shape) != len(strides):
            raise pickle.UnpicklingError("malformed tensor record: size and stride differ in rank")
        # as_strided checks that the view stays inside the storage
        return storage.flat.as_strided(shape, strides, storage_offset)


class _RebuildParameter:
    """Safe ``torch._utils._rebuild_parameter``: returns the plain tensor."""

    __slots__ = ()

    def __call__(self, data: Any, requires_grad: Any = False, *rest: Any) -> Tensor:
        if not isinstance(data, Tensor):
            raise pickle.UnpicklingError("malformed parameter record")
        return data


class _TensorClass:
    """What ``torch.Tensor`` / ``torch.nn.Parameter`` resolve to inside a rebuild record."""

    __slots__ = ()


class _RebuildFromTypeV2:
    """Safe ``torch._tensor._rebuild_from_type_v2`` for plain tensors and parameters."""

    __slots__ = ()

    def __call__(self, func: Any, new_type: Any, args: Any, state: Any) -> Tensor:
        if not isinstance(func, _RebuildTensorV2 | _RebuildParameter) or not isinstance(
            new_type, _TensorClass
        ):
            raise pickle.UnpicklingError("unsupported tensor subclass record")
        if not isinstance(args, tuple):
            raise pickle.UnpicklingError("malformed tensor record")
        return func(*args)


class _Latin1Encode:
    """Safe ``_codecs.encode`` as used by protocol 0-2 pickles for bytes: latin-1 only."""

    __slots__ = ()

    def __call__(self, text: Any, encoding: Any = "utf-8", *rest: Any) -> bytes:
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or rest:
            raise pickle.UnpicklingError("unsupported _codecs.encode record")
        return text.encode("latin1")


_TORCH_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool "
        "complex64 complex128 double float half long int short"
    ).split()
}

_BUILTINS = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "int": int,
    "long": int,
    "float": float,
    "bool": bool,
    "str": str,
    "unicode": str,
    "bytes": bytes,
    "bytearray": bytearray,
    "complex": complex,
}


def _allowed(module: str, name: str) -> Any:
    """Real object for an allow-listed global, else None."""
    if module in ("builtins", "__builtin__"):
        return _BUILTINS.get(name)
    if module == "_codecs" and name == "encode":
        return _Latin1Encode()
    if module == "collections":
        return {"OrderedDict": OrderedDict, "defaultdict": defaultdict}.get(name)
    if module == "torch":
        if name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        if name == "Size":
            return torch.Size
        if name == "Tensor":
            return _TensorClass()
    if module == "torch.storage" and name == "UntypedStorage":
        return _StorageType(torch.uint8)
    if module == "torch._utils":
        if name == "_rebuild_tensor_v2":
            return _RebuildTensorV2()
        if name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _RebuildParameter()
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        return _RebuildFromTypeV2()
    if module == "torch.nn.parameter" and name == "Parameter":
        return _TensorClass()
    return None


# -- unpickler ----------------------------------------------------------------------------------


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler resolving globals only through the allow-list / placeholders."""

    def __init__(
        self, data: bytes, source: str, storages: _StorageReader | None, **kwargs: Any
    ) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8", **kwargs)
        self._source = source
        self._storages = storages
        self._placeholders: dict[tuple[str, str], type[Placeholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        obj = _allowed(module, name)
        if obj is not None:
            return obj
        if module.split(".", 1)[0] in _PLACEHOLDER_MODULES:
            key = (module, name)
            if key not in self._placeholders:
                self._placeholders[key] = _placeholder_class(module, name)
            return self._placeholders[key]
        raise UnsafeCheckpointError(
            f"{self._source}: refusing to load: the pickle references '{module}.{name}', "
            "which is not on the allow-list of safe globals (containers, tensors, storages, "
            "omegaconf/Lightning metadata). Loading never runs code from a checkpoint; if you "
            "trust this file, re-save its state_dict as safetensors in a trusted environment."
        )

    def persistent_load(self, pid: Any) -> Any:
        if (
            self._storages is None
            or not isinstance(pid, tuple)
            or len(pid) != 5
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
        ):
            raise pickle.UnpicklingError(
                f"{self._source}: unsupported persistent id {pid!r:.80} in the pickle"
            )
        _, storage_type, key, _location, numel = pid
        return self._storages.get(str(key), storage_type.dtype, numel)


class _StorageReader:
    """Reads ``<prefix>/data/<key>`` records of a torch zip archive, once per key."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        self._archive = archive
        self._prefix = prefix
        self._source = source
        self._cache: dict[str, _Storage] = {}
        byteorder = f"{prefix}/byteorder"
        names = set(archive.namelist())
        order = archive.read(byteorder).decode().strip() if byteorder in names else "little"
        if order not in ("little", "big"):
            raise CheckpointFormatError(f"{source}: unknown byte order {order!r}")
        self._swap = order != sys.byteorder

    def get(self, key: str, dtype: torch.dtype, numel: Any) -> _Storage:
        if key in self._cache:
            return self._cache[key]
        name = f"{self._prefix}/data/{key}"
        try:
            raw = bytearray(self._archive.read(name))
        except KeyError:
            raise CheckpointFormatError(f"{self._source}: missing tensor record {name}") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(raw) % itemsize:
            raise CheckpointFormatError(f"{self._source}: record {name} has a partial element")
        # clone: own, aligned memory (the bytearray's buffer may be misaligned for dtype)
        flat = torch.frombuffer(raw, dtype=torch.uint8).clone() if raw else torch.empty(0)
        flat = flat.to(torch.uint8)
        if self._swap and itemsize > 1:
            flat = flat.view(-1, itemsize).flip(-1).reshape(-1)
        flat = flat.view(dtype)
        if isinstance(numel, int) and dtype != torch.uint8 and flat.numel() != numel:
            raise CheckpointFormatError(
                f"{self._source}: record {name} holds {flat.numel()} elements, expected {numel}"
            )
        storage = _Storage(flat)
        self._cache[key] = storage
        return storage


def restricted_loads(data: bytes, *, source: str = "<bytes>") -> Any:
    """Unpickle plain pickle bytes with the allow-list (no tensors: no persistent ids)."""
    return _RestrictedUnpickler(data, source, None).load()


def _archive_prefix(archive: zipfile.ZipFile, source: str) -> str:
    pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkls) != 1:
        raise CheckpointFormatError(
            f"{source}: zip archive is not a torch.save checkpoint (no single <name>/data.pkl)"
        )
    return pkls[0][: -len("/data.pkl")]


def load_torch_checkpoint(path: PathLike) -> Any:
    """Load a ``torch.save`` zip checkpoint without executing any code from it.

    Returns the saved object with tensors as CPU tensors and unknown classes as inert
    :class:`Placeholder` objects. Raises :class:`UnsafeCheckpointError` if the pickle calls or
    references anything outside the allow-list, :class:`CheckpointFormatError` if the file is
    not a torch zip archive (old pre-1.6 files and plain pickles are not supported; a plain
    pickle is still screened so a malicious one is reported as such).
    """
    source = os.fspath(path)
    if not zipfile.is_zipfile(source):
        with open(source, "rb") as fh:
            head = fh.read()
        try:
            obj = restricted_loads(head, source=source)
        except UnsafeCheckpointError:
            raise
        except Exception as exc:  # not a pickle at all
            raise CheckpointFormatError(
                f"{source}: not a torch.save zip checkpoint ({type(exc).__name__}: {exc})"
            ) from None
        kind = "a pre-1.6 torch.save file" if obj == _LEGACY_MAGIC else "a plain pickle"
        raise CheckpointFormatError(
            f"{source}: {kind}, not a torch.save zip archive; only the zip format is supported "
            "(re-save with a current torch in a trusted environment)"
        )
    with zipfile.ZipFile(source) as archive:
        prefix = _archive_prefix(archive, source)
        data = archive.read(f"{prefix}/data.pkl")
        reader = _StorageReader(archive, prefix, source)
        try:
            return _RestrictedUnpickler(data, source, reader).load()
        except (UnsafeCheckpointError, CheckpointFormatError):
            raise
        except Exception as exc:
            raise CheckpointFormatError(
                f"{source}: could not read the checkpoint pickle ({type(exc).__name__}: {exc})"
            ) from exc
