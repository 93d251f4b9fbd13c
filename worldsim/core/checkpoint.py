"""worldsim's one checkpoint format: a safetensors file of tensors plus a JSON file of everything else.

``save_checkpoint(dir, tensors, meta)`` writes ``<name>.safetensors`` and ``<name>.json``; the JSON holds
the caller's metadata (model config, normalization modes, the command that trained it) and the
SHA-256 of the tensor file, so a truncated or corrupted checkpoint is refused with a clear message.
Both files are written to a temporary name and renamed, so a crash never leaves half a checkpoint
under the real name. Nothing is ever unpickled.

Checkpoints rewritten during a run (the trainer's resumable state) go through :func:`save_rotating`, which
keeps the previous one beside the new one, and :func:`load_latest`, which falls back to it when the
newest is damaged or missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
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
    # On disk before the renames, so that a power cut cannot leave a renamed but empty file.
    for path in (tmp_weights, tmp_config):
        _fsync(path)
    os.replace(tmp_weights, weights)
    os.replace(tmp_config, config)
    _fsync(directory)
    return directory


def _fsync(path: Path) -> None:
    if os.name != "posix" and path.is_dir():
        return  # only POSIX systems can open (and so flush) a directory
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save_rotating(directory: str | Path, tensors: dict, meta: dict, *, name: str) -> Path:
    """Write checkpoint ``name`` as the folder ``directory/name``, keeping the one it replaces as ``name.prev``.

    The new checkpoint is written completely into ``name.tmp`` first; then the folders are renamed
    (``name`` -> ``name.prev``, ``name.tmp`` -> ``name``). Each rename is atomic, so at every instant at least
    one complete checkpoint exists, and :func:`load_latest` finds it.
    """
    directory = Path(directory)
    latest, previous, staging = directory / name, directory / f"{name}.prev", directory / f"{name}.tmp"
    if staging.exists():  # left over by a run killed while writing
        shutil.rmtree(staging)
    save_checkpoint(staging, tensors, meta, name=name)
    if latest.exists():
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(latest, previous)
    os.replace(staging, latest)
    _fsync(directory)
    return latest


def load_latest(directory: str | Path, *, name: str, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read the newest good checkpoint written by :func:`save_rotating`.

    A damaged or missing ``directory/name`` (for instance a truncated file, refused by its checksum) is
    reported with a warning and ``directory/name.prev`` is read instead; if neither is usable the
    :class:`CheckpointError` names both problems.
    """
    directory = Path(directory)
    problems = []
    for candidate in (directory / name, directory / f"{name}.prev"):
        try:
            tensors, meta = load_checkpoint(candidate, name=name, kind=kind)
        except CheckpointError as error:
            problems.append(str(error))
            continue
        if problems:
            warnings.warn(f"{problems[0]}; falling back to the previous checkpoint {candidate}", stacklevel=2)
        return tensors, meta
    raise CheckpointError(f"no usable {name!r} checkpoint in {directory}: " + "; ".join(problems))


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
