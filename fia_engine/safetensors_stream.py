"""Read a safetensors file's header ourselves and copy the file tensor by tensor.

Large checkpoints (2 to 7 GB) are never loaded whole: the header is parsed and checked
here, the tensors that change are read one at a time, and every other tensor's bytes are
copied in chunks. Peak memory is the largest changed tensor plus the header, whatever the
file's size. The layout of the data section stays as it was (same order, same offsets), so
a copy is byte-identical to its source outside the changed tensors and the metadata.

The format: 8 bytes (little-endian u64) giving the header's length N, N bytes of JSON
(``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}``), then
the data, where offsets count from the end of the header.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InvalidInputError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the safetensors library itself enforces
_CHUNK = 16 * 1024 * 1024
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}

TensorTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # the safetensors spelling: "F16", "BF16", ...
    shape: tuple[int, ...]
    begin: int  # offsets in the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    data_start: int  # file offset of the data section
    entries: dict[str, TensorEntry]  # in data order
    metadata: dict[str, str]

    def read_tensor(self, name: str) -> torch.Tensor:
        """One tensor, read from disk into new memory (nothing else is read)."""
        entry = self.entries[name]
        if entry.dtype not in _DTYPES:
            raise InvalidInputError(f"{self.path}: tensor {name} has dtype {entry.dtype}, which cannot be edited")
        buffer = bytearray(entry.nbytes)
        with open(self.path, "rb") as handle:
            handle.seek(self.data_start + entry.begin)
            if handle.readinto(buffer) != entry.nbytes:
                raise InvalidInputError(f"{self.path} ended inside tensor {name}: the file is truncated")
        if not buffer:
            return torch.empty(entry.shape, dtype=_DTYPES[entry.dtype])
        return torch.frombuffer(buffer, dtype=_DTYPES[entry.dtype]).reshape(entry.shape)


def read_header(path: str | os.PathLike, what: str = "checkpoint") -> SafetensorsHeader:
    """The checked header of a safetensors file; InvalidInputError, naming the fault, otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{what} not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
            raise InvalidInputError(f"{path} is not a safetensors file (no valid header length)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"{path} is not a safetensors file (header: {error})") from None
    if not isinstance(header, dict):
        raise InvalidInputError(f"{path} is not a safetensors file (the header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidInputError(f"{path}: the safetensors metadata must map strings to strings")
    entries = sorted((_entry(path, name, info) for name, info in header.items()), key=lambda e: (e.begin, e.end))
    data_size = size - 8 - length
    expected = 0
    for entry in entries:
        if entry.begin != expected:
            raise InvalidInputError(f"{path}: tensor {entry.name} does not follow the one before it (damaged header)")
        expected = entry.end
    if expected != data_size:
        raise InvalidInputError(
            f"{path}: the header describes {expected} bytes of tensors but the file holds {data_size} (truncated?)"
        )
    return SafetensorsHeader(path, 8 + length, {entry.name: entry for entry in entries}, dict(metadata))


def _entry(path: Path, name: str, info) -> TensorEntry:
    try:
        dtype, shape, (begin, end) = str(info["dtype"]), tuple(int(d) for d in info["shape"]), info["data_offsets"]
        begin, end = int(begin), int(end)
    except (KeyError, TypeError, ValueError):
        raise InvalidInputError(f"{path}: the header entry of {name!r} is damaged") from None
    itemsize = _DTYPES[dtype].itemsize if dtype in _DTYPES else None
    if begin < 0 or end < begin or any(d < 0 for d in shape):
        raise InvalidInputError(f"{path}: the header entry of {name!r} is damaged")
    if itemsize is not None and end - begin != math.prod(shape) * itemsize:
        raise InvalidInputError(f"{path}: tensor {name!r} {shape} {dtype} does not fill its {end - begin} bytes")
    return TensorEntry(name, dtype, shape, begin, end)


def write_streamed(
    header: SafetensorsHeader,
    target: str | os.PathLike,
    metadata: dict[str, str],
    transforms: dict[str, TensorTransform],
) -> None:
    """Write ``header``'s file to ``target`` with ``metadata`` and each listed tensor transformed.

    A transform gets the stored tensor and returns its replacement, of the same shape and
    dtype (so every offset stays). All other tensors are copied byte for byte, in chunks.
    ``target`` is written in place: give it a temporary path (output_paths.atomic_file).
    """
    unknown = sorted(set(transforms) - set(header.entries))
    if unknown:
        raise InvalidInputError(f"{header.path} has no tensors {unknown[:3]}")
    layout = {
        entry.name: {"dtype": entry.dtype, "shape": list(entry.shape), "data_offsets": [entry.begin, entry.end]}
        for entry in header.entries.values()
    }
    text = json.dumps({"__metadata__": metadata, **layout}, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the safetensors writer does
    with open(header.path, "rb") as source, open(target, "wb") as out:
        out.write(len(text).to_bytes(8, "little"))
        out.write(text)
        for entry in header.entries.values():
            if entry.name in transforms:
                out.write(_transformed_bytes(header, entry, transforms[entry.name]))
            else:
                source.seek(header.data_start + entry.begin)
                _copy(source, out, entry.nbytes, header.path)


def _transformed_bytes(header: SafetensorsHeader, entry: TensorEntry, transform: TensorTransform) -> bytes:
    before = header.read_tensor(entry.name)
    after = transform(before)
    if after.dtype != before.dtype or tuple(after.shape) != entry.shape:
        raise ValueError(
            f"transform of {entry.name} returned {after.dtype} {tuple(after.shape)}, not {before.dtype} {entry.shape}"
        )
    data = after.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()
    if len(data) != entry.nbytes:
        raise ValueError(f"transform of {entry.name} gave {len(data)} bytes, not {entry.nbytes}")
    return data


def _copy(source, out, count: int, path: Path) -> None:
    while count:
        chunk = source.read(min(_CHUNK, count))
        if not chunk:
            raise InvalidInputError(f"{path} ended early: the file is truncated")
        out.write(chunk)
        count -= len(chunk)
