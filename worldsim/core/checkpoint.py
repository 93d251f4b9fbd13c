"""worldsim's one checkpoint format: a safetensors file of tensors plus a JSON file of everything else.

``save_checkpoint(dir, tensors, meta)`` writes ``<name>.safetensors`` and ``<name>.json``; the JSON holds
the caller's metadata (model config, normalization modes, the command that trained it) and the
SHA-256 of the tensor file, so a truncated or corrupted checkpoint is refused with a clear message.
Both files are written to a temporary name and renamed, so a crash never leaves half a checkpoint
under the real name. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FORMAT = "worldsim-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted, or of another kind than asked for."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(directory: str | Path, tensors: dict, meta: dict, *, name: str = "model") -> Path:
    """Write ``tensors`` (torch tensors or numpy arrays) and JSON-serializable ``meta`` to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plain = {
        key: (value.detach().cpu() if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value)))
        .contiguous()
        .clone()
        for key, value in tensors.items()
    }
    weights, config = directory / f"{name}.safetensors", directory / f"{name}.json"
    tmp_weights, tmp_config = weights.with_suffix(".safetensors.tmp"), config.with_suffix(".json.tmp")
    save_file(plain, str(tmp_weights))
    record = {"format": FORMAT, "version": VERSION, "sha256": _sha256(tmp_weights), **meta}
    tmp_config.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp_weights, weights)
    os.replace(tmp_config, config)
    return directory


def load_checkpoint(
    directory: str | Path, *, name: str = "model", kind: str | None = None
) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`; verify its checksum and, if given, its kind."""
    directory = Path(directory)
    weights, config = directory / f"{name}.safetensors", directory / f"{name}.json"
    for path in (weights, config):
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {directory}: {path.name} is missing")
    try:
        meta = json.loads(config.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{config} is not valid JSON ({error}); the checkpoint is damaged") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{config} is not a worldsim checkpoint")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{config} has format version {meta['version']}; this worldsim reads up to {VERSION}")
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{directory} holds a {meta.get('kind')!r} checkpoint, not a {kind!r} one")
    if _sha256(weights) != meta.get("sha256"):
        raise CheckpointError(f"{weights} does not match its recorded checksum: truncated or corrupted")
    return load_file(str(weights)), meta
