"""``Pretrained``: save / load / shipped lookup / provenance, once, for every model worldsim trains.

A model class says what its checkpoint holds (:meth:`Pretrained.checkpoint_contents`) and how to rebuild
itself from one (:meth:`Pretrained.from_checkpoint`); the mixin writes and reads worldsim's one checkpoint
format (safetensors + JSON with a checksum), finds checkpoints shipped in ``worldsim/checkpoints/<name>``,
and records where a checkpoint came from (worldsim and torch versions, when it was written).
"""

from __future__ import annotations

import datetime
import json
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import torch

from worldsim.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def shipped_dir() -> Path:
    """The folder of the checkpoints that ship inside the package."""
    return Path(str(resources.files("worldsim"))) / "checkpoints"


def resolve_pretrained(name_or_path: str | Path, kind: str) -> Path:
    """A checkpoint directory as it is, else a shipped checkpoint of that name; a one-line error otherwise."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shipped = shipped_dir() / str(name_or_path)
    if shipped.is_dir():
        return shipped
    available = sorted(p.name for p in shipped_dir().iterdir() if _kind_of(p) == kind) if shipped_dir().is_dir() else []
    noun = {"diffusion_policy": "policy", "world_model": "world model"}.get(kind, kind)
    raise FileNotFoundError(
        f"no checkpoint directory {str(name_or_path)!r} and no shipped {noun} of that name "
        f"(shipped: {', '.join(available) or 'none'})"
    )


def _kind_of(directory: Path) -> str | None:
    try:
        return json.loads((directory / "model.json").read_text()).get("kind")
    except (OSError, json.JSONDecodeError):
        return None


def require_field(meta: dict, key: str, where: str | Path) -> Any:
    """``meta[key]``, or a one-line :class:`CheckpointError` naming the missing field."""
    if key not in meta:
        raise CheckpointError(f"{where}: model.json has no {key!r} field; the checkpoint is damaged or not a model")
    return meta[key]


class Pretrained:
    """Mixin of worldsim's trained models: ``save_pretrained(dir)`` and ``Model.from_pretrained(name_or_dir)``."""

    checkpoint_kind: ClassVar[str]
    metadata: dict
    """The JSON record of the checkpoint the model was loaded from (empty for a fresh model)."""

    def checkpoint_contents(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The tensors (name -> tensor or array) and the JSON-serializable record that rebuild this model."""
        raise NotImplementedError

    @classmethod
    def from_checkpoint(cls, tensors: dict[str, torch.Tensor], meta: dict, *, where: str | Path):
        """Rebuild the model from what :meth:`checkpoint_contents` returned (``where`` names it in errors)."""
        raise NotImplementedError

    def save_pretrained(self, directory: str | Path, *, extra: dict | None = None) -> Path:
        """Write the model to ``directory``; ``extra`` (how it was trained, say) is kept in its JSON."""
        import worldsim

        tensors, meta = self.checkpoint_contents()
        provenance = {
            "worldsim": worldsim.__version__,
            "torch": torch.__version__,
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        record = {"kind": self.checkpoint_kind, **meta, **(extra or {}), "provenance": provenance}
        return save_checkpoint(directory, tensors, json.loads(json.dumps(record, default=_plain)))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs):
        """Load a checkpoint directory, or a shipped checkpoint by name (``worldsim/checkpoints/<name>``)."""
        directory = resolve_pretrained(name_or_path, cls.checkpoint_kind)
        tensors, meta = load_checkpoint(directory, kind=cls.checkpoint_kind)
        model = cls.from_checkpoint(tensors, meta, where=directory, **kwargs)
        model.metadata = meta
        return model


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as JSON numbers and lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
