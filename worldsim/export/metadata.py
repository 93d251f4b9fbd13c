"""Model metadata travels inside the ONNX file, so a runner needs nothing else (no torch, no checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

KEY = "worldsim"


class ExportFormatError(ValueError):
    """An ONNX file that is not a worldsim export, or not of the kind asked for."""


def write_metadata(path: str | Path, meta: dict) -> None:
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = KEY, json.dumps(meta)
    onnx.save(model, str(path))


def read_metadata(path: str | Path, kind: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and others from protobuf
        raise ExportFormatError(f"{path} is not a readable ONNX file ({type(error).__name__}: {error})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if KEY not in props:
        raise ExportFormatError(f"{path} is an ONNX model but not a worldsim export (no '{KEY}' metadata)")
    meta = json.loads(props[KEY])
    if meta.get("kind") != kind:
        raise ExportFormatError(f"{path} holds a {meta.get('kind')!r} export, not a {kind!r} one")
    return meta
