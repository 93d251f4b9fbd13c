"""Model metadata and a checksum travel inside the ONNX file, so a runner needs nothing else (no torch, no checkpoint).

Every file an export writes carries two metadata entries: ``worldsim`` (a JSON object: what the runner
needs) and ``worldsim_checksum`` (``sha256-v1:<hex>``, see :func:`checksum`). :func:`read_metadata`
refuses a file whose checksum does not match, so a damaged copy is never run silently. The checksum
detects corruption (a flipped bit, a cut download, a file edited by another tool), not tampering: it
is not keyed, so whoever can rewrite the file can rewrite its checksum too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import onnx

KEY = "worldsim"
CHECKSUM_KEY = "worldsim_checksum"
CHECKSUM_SCHEME = "sha256-v1"


class ExportFormatError(ValueError):
    """An ONNX file that is not a worldsim export, not of the kind asked for, or damaged."""


def _framed(data: bytes) -> bytes:
    # Length-prefixed, so that moving bytes from one field to the next changes the digest.
    return struct.pack("<Q", len(data)) + data


def checksum(model: onnx.ModelProto) -> str:
    """``sha256-v1:<hex>`` over everything in ``model`` except its own checksum entry.

    The weights are hashed directly: each initializer, in the order of its name, as its name, data type,
    dimensions and bytes (``raw_data``, which ONNX defines as little-endian, so the digest does not depend
    on the machine; the rare tensor kept in typed fields is hashed as its protobuf message). The rest
    (graph structure, constant nodes, opsets, the ``worldsim`` metadata JSON) is small and is hashed as
    its protobuf serialization, with the initializers and the checksum entry left out.
    """
    digest = hashlib.sha256(CHECKSUM_SCHEME.encode() + b"\0")
    for tensor in sorted(model.graph.initializer, key=lambda t: t.name):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            # Its bytes are in another file that the checksum could not vouch for; worldsim never writes these.
            raise ExportFormatError(f"initializer {tensor.name!r} keeps its weights in an external data file")
        digest.update(_framed(tensor.name.encode()))
        digest.update(struct.pack("<i", tensor.data_type))
        digest.update(_framed(struct.pack(f"<{len(tensor.dims)}q", *tensor.dims)))
        digest.update(_framed(tensor.raw_data if tensor.HasField("raw_data") else tensor.SerializeToString()))
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    del rest.graph.initializer[:]
    kept = [p for p in rest.metadata_props if p.key != CHECKSUM_KEY]
    del rest.metadata_props[:]
    rest.metadata_props.extend(kept)
    digest.update(_framed(rest.SerializeToString(deterministic=True)))
    return f"{CHECKSUM_SCHEME}:{digest.hexdigest()}"


PACKED_DTYPES = ("float32", "float64", "int32", "int64")


def pack_tensors(tensors: dict[str, np.ndarray]) -> dict[str, dict]:
    """Arrays as JSON-safe entries ``{"dtype", "shape", "base64"}`` (little-endian bytes): exact, and a
    quarter of the size of the numbers written out as text (a world model's one-step predictor is 140,000)."""
    packed = {}
    for name, array in tensors.items():
        array = np.asarray(array)
        if array.dtype.name not in PACKED_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype.name} cannot be packed (one of {PACKED_DTYPES})")
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        packed[name] = {
            "dtype": array.dtype.name,
            "shape": list(array.shape),
            "base64": base64.b64encode(data).decode(),
        }
    return packed


def unpack_tensors(packed: dict) -> dict[str, np.ndarray]:
    """The arrays of :func:`pack_tensors`; an entry that is a plain (nested) list, as exports before packing
    wrote them, is read as it stands. A malformed entry raises a one-line :class:`ExportFormatError`."""
    tensors = {}
    for name, entry in packed.items():
        if not isinstance(entry, dict):
            tensors[name] = np.asarray(entry)
            continue
        dtype, shape = entry.get("dtype"), entry.get("shape")
        if dtype not in PACKED_DTYPES or not isinstance(shape, list):
            raise ExportFormatError(
                f"tensor {name!r} in the metadata has no valid dtype and shape ({dtype!r}, {shape!r})"
            )
        try:
            data = base64.b64decode(entry.get("base64", ""), validate=True)
        except ValueError:
            raise ExportFormatError(f"tensor {name!r} in the metadata is not valid base64") from None
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if len(data) != expected:
            raise ExportFormatError(
                f"tensor {name!r} in the metadata has {len(data)} bytes, its shape {shape} needs {expected}"
            )
        tensors[name] = np.frombuffer(data, np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    return tensors


def write_metadata(path: str | Path, meta: dict) -> None:
    """Store ``meta`` in the ONNX file at ``path`` (replacing any metadata) and seal the file with its checksum."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = KEY, json.dumps(meta)
    digest = checksum(model)  # before the entry that will hold it exists, as read_metadata leaves it out
    seal = model.metadata_props.add()
    seal.key, seal.value = CHECKSUM_KEY, digest
    onnx.save(model, str(path))


def read_metadata(path: str | Path, kind: str) -> dict:
    """The worldsim metadata of the export at ``path``, after checking that the file is whole and of ``kind``.

    Raises ``FileNotFoundError`` for a missing file and :class:`ExportFormatError`, one line naming the
    file, for an empty, truncated or corrupted file, a checksum mismatch, a file without a checksum
    (exported before worldsim wrote them), a foreign ONNX model or an export of another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    data = path.read_bytes()
    if not data:
        raise ExportFormatError(f"{path} is empty (0 bytes): an interrupted export or copy; re-export it")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as error:  # protobuf raises DecodeError (and others) with a message that names no file
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ExportFormatError(
            f"{path} is not a readable ONNX file: truncated or corrupted ({len(data):,} bytes; {reason}); re-export it"
        ) from None
    # protobuf parses a file cut at a field boundary without complaint; what is left then lacks a graph.
    if not model.HasField("graph") or not model.opset_import:
        raise ExportFormatError(
            f"{path} is not a readable ONNX file: truncated or not ONNX ({len(data):,} bytes and no complete graph); "
            "re-export it"
        )
    props = {p.key: p.value for p in model.metadata_props}
    if KEY not in props:
        raise ExportFormatError(
            f"{path} is an ONNX model but not a worldsim export (no '{KEY}' metadata; a foreign model, or an export "
            "cut short)"
        )
    if CHECKSUM_KEY not in props:
        raise ExportFormatError(
            f"{path} has no weight checksum ('{CHECKSUM_KEY}' metadata): exported by an older worldsim or rewritten "
            "by another tool; re-export it"
        )
    stored = props[CHECKSUM_KEY]
    if not stored.startswith(CHECKSUM_SCHEME + ":"):
        raise ExportFormatError(
            f"{path} carries a checksum of an unknown scheme ({stored.split(':')[0]!r}, this worldsim knows "
            f"{CHECKSUM_SCHEME!r}); re-export it with this version"
        )
    try:
        computed = checksum(model)
    except ExportFormatError as error:
        raise ExportFormatError(f"{path}: {error}, which worldsim exports never do; re-export it") from None
    if computed != stored:
        raise ExportFormatError(
            f"{path}: checksum mismatch (stored {stored[:22]}..., computed {computed[:22]}...): its weights or "
            "metadata changed after export, so the file is damaged; re-export it"
        )
    try:
        meta = json.loads(props[KEY])
    except json.JSONDecodeError as error:  # a valid checksum over bad JSON: written by something else than worldsim
        raise ExportFormatError(f"{path} has unreadable '{KEY}' metadata ({error})") from None
    if not isinstance(meta, dict) or meta.get("kind") != kind:
        found = meta.get("kind") if isinstance(meta, dict) else None
        raise ExportFormatError(f"{path} holds a {found!r} export, not a {kind!r} one")
    return meta
