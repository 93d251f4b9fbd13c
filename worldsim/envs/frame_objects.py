"""Objects in rendered frames, found by their colour: masks, area, centroid, orientation and sharpness.

A pixel world model is judged by what happens to the objects it draws: pixel MSE rewards a faded block
over a sharp one in the wrong place. These measurements compare a generated frame with the true one
object by object: the object's area (a smear grows it, a fade shrinks it), its centroid, its orientation
from the second moments of its mask, and the frame's sharpness (image gradient energy). A task names its
objects' colours (``worldsim.envs.push_t.OBJECT_COLOURS``); nothing here knows a task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ColourRule:
    """The pixels of one object: channel ``dominant`` exceeds channel ``other`` by at least ``margin``
    (in 0-255 units), e.g. a blue block on a white table: blue over red by 30."""

    dominant: int
    other: int
    margin: int
    oriented: bool = True
    """Whether the object has an orientation to measure (a disc has none)."""

    def mask(self, frames: np.ndarray) -> np.ndarray:
        """Boolean masks ``[..., H, W]`` of uint8 frames ``[..., H, W, 3]``."""
        frames = np.asarray(frames).astype(np.int16)
        return frames[..., self.dominant] - frames[..., self.other] >= self.margin


def mask_moments(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Area (pixels), centroid ``(x, y)`` in pixels and orientation (radians in ``[0, pi)``, from the second
    central moments) of boolean masks ``[..., H, W]``. An empty mask has NaN centroid and orientation."""
    masks = np.asarray(masks, dtype=np.float64)
    h, w = masks.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    area = masks.sum((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks * xs).sum((-2, -1)) / area
        cy = (masks * ys).sum((-2, -1)) / area
        dx, dy = xs - cx[..., None, None], ys - cy[..., None, None]
        mu20 = (masks * dx * dx).sum((-2, -1)) / area
        mu02 = (masks * dy * dy).sum((-2, -1)) / area
        mu11 = (masks * dx * dy).sum((-2, -1)) / area
    orientation = np.mod(0.5 * np.arctan2(2 * mu11, mu20 - mu02), np.pi)
    return {"area": area, "centroid": np.stack([cx, cy], -1), "orientation": orientation}


def angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest difference between axis orientations (mod pi), in ``[0, pi / 2]``."""
    d = np.mod(np.asarray(a) - np.asarray(b), np.pi)
    return np.minimum(d, np.pi - d)


def sharpness(frames: np.ndarray) -> np.ndarray:
    """Image gradient energy per frame ``[...]``: the mean squared difference of neighbouring pixels (0-1
    intensities, both directions, all channels). A blurred frame has less of it than a sharp one."""
    f = np.asarray(frames, dtype=np.float64) / 255.0
    dx = np.diff(f, axis=-2) ** 2
    dy = np.diff(f, axis=-3) ** 2
    return dx.mean((-3, -2, -1)) + dy.mean((-3, -2, -1))


def object_fidelity(generated: np.ndarray, truth: np.ndarray, objects: dict[str, ColourRule]) -> dict[str, np.ndarray]:
    """Per frame, for generated frames against the true ones (both ``[..., H, W, 3]`` uint8): each object's
    ``<name>_area_ratio`` (generated / true area), ``<name>_centroid_error`` (pixels) and
    ``<name>_orientation_error`` (radians, mod pi; objects with an orientation), and the ``sharpness_ratio``
    (generated / true).
    NaN where the true frame does not show the object, or the generated one lost it (centroid, orientation)."""
    out = {}
    for name, rule in objects.items():
        made, real = mask_moments(rule.mask(generated)), mask_moments(rule.mask(truth))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"{name}_area_ratio"] = np.where(real["area"] > 0, made["area"] / real["area"], np.nan)
        out[f"{name}_centroid_error"] = np.linalg.norm(made["centroid"] - real["centroid"], axis=-1)
        if rule.oriented:
            out[f"{name}_orientation_error"] = angle_difference(made["orientation"], real["orientation"])
    with np.errstate(invalid="ignore", divide="ignore"):
        out["sharpness_ratio"] = sharpness(generated) / sharpness(truth)
    return out
