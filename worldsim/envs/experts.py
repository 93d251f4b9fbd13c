"""Scripted experts for worldsim's tasks, and the :class:`Expert` protocol every expert follows.

An expert is made by a factory called as ``factory(seed=...)`` (the class itself for the experts here),
``reset()`` before each episode, and then called once per control step with the observation and info dict
the environment just returned: ``action = expert(obs, info)``. worldsim's own experts read the state vector
that worldsim's tasks put into every info (``info["state"]``, the ``obs_type="state"`` observation), never
pixels, so they act the same whatever the observation type; each draws its per-episode choice from its own
seeded generator in ``reset()``. Experts for public benchmark tasks are in
:mod:`worldsim.envs.public_experts`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from worldsim.core.angles import wrap_angle
from worldsim.envs.pick_place import CUBE_HALF, SCALE, STEP_LENGTH
from worldsim.envs.push_t import GOAL_POSE, PUSHER_RADIUS, WORKSPACE, rotation_matrix, t_distance, t_rectangles


@runtime_checkable
class Expert(Protocol):
    """A scripted controller that acts from what the environment returns, as a policy would.

    Life cycle (what ``collect_dataset``, ``collect_takeover_dataset`` and ``NoisyExpert`` do):

    1. ``expert = factory(seed=seed)``: a factory (usually the class) makes the expert; ``seed`` seeds the
       expert's own generator, for experts that draw a per-episode choice (demonstrations of one situation
       that differ between episodes, i.e. multimodal data). The same seed must give the same actions.
    2. ``expert.reset()`` before each episode, after ``env.reset``.
    3. ``action = expert(obs, info)`` at every step, with the observation and info dict that the env's last
       ``reset`` or ``step`` returned. The action must lie in the env's action space.

    An expert reads only ``obs`` and entries of ``info`` that the env documents (worldsim's tasks put the
    state vector into ``info["state"]``; Gymnasium-Robotics reports ``is_success``, gym-pusht the agent's
    velocity): never the simulator behind ``env.unwrapped``, so the same expert runs in a vector-env worker,
    behind the ZeroMQ bridge, or on a recorded stream of observations. It may keep state between calls of
    one episode (e.g. an estimate of a velocity the observation lacks); ``reset()`` clears it.
    """

    def reset(self) -> None:
        """Start a new episode (draw the per-episode choice, forget the previous episode)."""
        ...

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        """The action for the state the env just reported."""
        ...


def _clip_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector if norm <= max_norm else vector * (max_norm / norm)


def _push_primitives() -> tuple[np.ndarray, np.ndarray]:
    """Contact points on the T's faces and the inward push directions there, in the block frame.

    Points on the bar's underside and the stem's sides stay clear of the inner corners so that the pusher
    fits there while touching only one face.
    """
    (bx, by, bw, bh), (sx, sy, sw, sh) = t_rectangles()
    top, under, bottom = by + bh, by - bh, sy - sh
    pairs = [((x, top), (0, -1)) for x in (-0.045, -0.02, 0.0, 0.02, 0.045)]  # top of the bar, pushing down
    pairs += [((x, under), (0, 1)) for x in (-0.045, 0.045)]  # underside of the bar, beside the stem
    pairs += [((sign * (bx + bw), by), (-sign, 0)) for sign in (-1, 1)]  # ends of the bar
    pairs += [((x, bottom), (0, 1)) for x in (-0.008, 0.0, 0.008)]  # bottom of the stem
    pairs += [  # sides of the stem, below the bar
        ((sign * (sx + sw), y), (-sign, 0)) for sign in (-1, 1) for y in (sy - 0.3 * sh, sy - 0.7 * sh)
    ]
    points, normals = zip(*pairs, strict=True)
    return np.array(points, dtype=float), np.array(normals, dtype=float)


class PushTExpert:
    """Scripted pusher for ``worldsim/PushT-v0``.

    At each step it scores a fixed set of push primitives (a contact point on a face of the T and the
    inward push direction) by how well the block motion a push would cause (translation along the push,
    rotation from its torque about the centre of mass) matches the remaining pose error, less a cost for
    the pusher's travel to it; it keeps the chosen primitive while it still helps (hysteresis avoids
    dithering between contacts, and every switch costs a detour), walks the pusher round
    the block to the primitive's approach corridor without touching the block, and then pushes, slowing
    down near the goal.

    Multimodality: the direction in which the pusher goes round the block is a per-episode coin flip
    whenever neither way is clearly shorter, and near-ties between mirror-image primitives are broken by the
    same coin, so demonstrations of one situation show both ways round.

    Args:
        seed: seed of the expert's own generator (the per-episode choice).
    """

    travel_speed = 0.02  # m per control step while moving round the block
    push_speed = 0.012  # m per control step while pushing, far from the goal
    clearance = 0.008  # m kept between pusher and block while moving round it
    approach_distance = 0.02  # m from the face where the straight final approach starts
    rotation_length = 0.04  # m: one radian of angle error weighs as much as this position error
    keep_score = 0.3  # a primitive whose alignment with the error drops below this is abandoned
    switch_margin = 0.5  # ...and another replaces it early only if better by this much
    travel_cost = 0.1  # score lost per 10 cm of travel to a primitive's approach point

    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._points, self._normals = _push_primitives()
        torque = self._points[:, 0] * self._normals[:, 1] - self._points[:, 1] * self._normals[:, 0]
        # Predicted (quasi-static) block twist per unit push, in the weighted (x, y, L*theta) space.
        self._effects = np.concatenate([self._normals, (torque / self.rotation_length)[:, None]], axis=1)
        self._effects /= np.linalg.norm(self._effects, axis=1, keepdims=True)
        self.reset()

    def reset(self) -> None:
        """Start a new episode: draw the side to go round the block and forget the current primitive."""
        self.side = 1 if self._rng.random() < 0.5 else -1
        self._primitive: int | None = None

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        # info["state"] = [pusher_x, pusher_y, block_x, block_y, cos, sin] in units of the workspace half-width.
        state = np.asarray(info["state"], dtype=np.float64)
        pusher = state[0:2] * WORKSPACE
        block = np.array([state[2] * WORKSPACE, state[3] * WORKSPACE, np.arctan2(state[5], state[4])])
        goal = np.array(GOAL_POSE)
        radius, workspace = PUSHER_RADIUS, WORKSPACE
        rot = rotation_matrix(block[2])
        error_block = rot.T @ (goal[:2] - block[:2])
        error_angle = wrap_angle(goal[2] - block[2])
        desired = np.array([*error_block, self.rotation_length * error_angle])
        error_size = float(np.linalg.norm(desired))
        scores = self._effects @ desired / max(error_size, 1e-9)
        # Mirror-image primitives score alike; the episode's side breaks such ties consistently.
        scores = scores + 0.03 * self.side * np.sign(self._points[:, 0])
        entries = block[:2] + (self._points - self._normals * (radius + self.approach_distance)) @ rot.T
        travel = np.linalg.norm(entries - pusher, axis=1)
        choice = scores - self.travel_cost * travel / 0.1
        best = int(np.argmax(choice))
        if (
            self._primitive is None
            or scores[self._primitive] < self.keep_score
            or choice[best] > choice[self._primitive] + self.switch_margin
        ):
            self._primitive = best
        contact = block[:2] + rot @ self._points[self._primitive]
        normal = rot @ self._normals[self._primitive]
        target = self._target(pusher, block, contact, normal, radius, error_size)
        return np.clip(target / workspace, -1.0, 1.0).astype(np.float32)

    def _target(
        self,
        pusher: np.ndarray,
        block: np.ndarray,
        contact: np.ndarray,
        normal: np.ndarray,
        radius: float,
        error_size: float,
    ) -> np.ndarray:
        tangent = np.array([-normal[1], normal[0]])
        offset = pusher - (contact - normal * radius)
        lateral, depth = float(offset @ tangent), float(-(offset @ normal))
        in_corridor = abs(lateral) < 0.004 and -0.01 < depth < radius + 0.03
        if in_corridor:
            if depth > 0.012:  # still short of the face: close in quickly but square to it
                return pusher + normal * min(depth, self.travel_speed) - tangent * lateral
            speed = float(np.clip(error_size * 0.4, 0.004, self.push_speed))
            return pusher + normal * speed - tangent * lateral
        entry = contact - normal * (radius + self.approach_distance)
        if self._segment_clear(pusher, entry, block, radius + self.clearance):
            return pusher + _clip_norm(entry - pusher, self.travel_speed)
        return self._go_round(pusher, block, entry, radius)

    def _go_round(self, pusher: np.ndarray, block: np.ndarray, entry: np.ndarray, radius: float) -> np.ndarray:
        """A step along the circle round the block's centre, towards the entry point's bearing."""
        reach = float(np.max(np.linalg.norm(self._points, axis=1))) + 0.025
        safe = reach + radius + self.clearance
        rel = pusher - block[:2]
        bearing = np.arctan2(rel[1], rel[0])
        goal_bearing = np.arctan2(*(entry - block[:2])[::-1])
        gap = wrap_angle(goal_bearing - bearing)
        # Go the short way unless both ways are about as long: then the episode's side decides.
        direction = np.sign(gap) if abs(abs(gap) - np.pi) > np.deg2rad(60) else self.side
        step = min(self.travel_speed / safe, abs(gap))
        new_bearing = bearing + direction * step
        distance = float(np.linalg.norm(rel))
        new_distance = distance + float(np.clip(safe - distance, -self.travel_speed, self.travel_speed))
        return block[:2] + new_distance * np.array([np.cos(new_bearing), np.sin(new_bearing)])

    @staticmethod
    def _segment_clear(start: np.ndarray, end: np.ndarray, block: np.ndarray, clearance: float) -> bool:
        samples = start + np.linspace(0.0, 1.0, 12)[:, None] * (end - start)
        return bool(np.all(t_distance(samples, block) >= clearance))


class PickPlaceExpert:
    """Scripted gripper for ``worldsim/PickPlace-v0``.

    The action is a function of the current state and the episode's side only (no hidden phase), which
    keeps the demonstrations consistent: with the fingers open the gripper funnels down onto the cube (it
    descends as its horizontal error shrinks) and closes once centred on it; while holding the cube it
    lifts and carries it to the target, then funnels down and opens when the cube touches the table there.
    Fingers closed on nothing open again, so a missed or dropped cube is simply picked up again. Moves go
    a fixed fraction of the way to the waypoint per step, capped at full speed: smooth, decelerating motions.

    Multimodality: the carrying path curves to the left or to the right of the straight line to the target
    (the horizontal heading is the target direction turned by 45 degrees, straightening out over the last
    8 cm), a per-episode coin flip.

    Args:
        seed: seed of the expert's own generator (the per-episode choice).
    """

    carry_height = 0.10  # m, grasp point height while carrying
    hover_height = 0.06  # m above the cube's centre while approaching it
    funnel_slope = 4.0  # m of height per m of horizontal error when descending (the fingers open 8 cm)
    curve_angle = np.deg2rad(45.0)  # heading offset of the carrying path
    gain = 0.7  # fraction of the remaining distance moved per step (before the speed cap)

    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Start a new episode: draw the side of the carrying path."""
        self.side = 1 if self._rng.random() < 0.5 else -1

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        # info["state"] = [gripper xyz, finger opening, cube xyz, target xyz] in units of SCALE metres.
        state = np.asarray(info["state"], dtype=np.float64) * SCALE
        gripper, opening, cube, target = state[0:3], float(state[3]), state[4:7], state[7:10]
        half = CUBE_HALF
        on_cube = np.linalg.norm(cube - gripper) < 0.015
        holding = on_cube and 2 * half - 0.01 < opening < 2 * half + 0.004
        if holding:
            to_target = target[:2] - gripper[:2]
            placed = np.linalg.norm(target[:2] - cube[:2]) < 0.012 and cube[2] < half + 0.004
            if placed:
                return self._action(gripper, gripper, close=False, step_length=STEP_LENGTH)
            distance = float(np.linalg.norm(to_target))
            turn = self.side * self.curve_angle * float(np.clip((distance - 0.02) / 0.06, 0.0, 1.0))
            c, s = np.cos(turn), np.sin(turn)
            heading = np.array([[c, -s], [s, c]]) @ to_target
            # Move sideways only once the cube is clear of the table.
            lifted = float(np.clip((cube[2] - half) / 0.03, 0.0, 1.0))
            height = self._funnel(distance, half + 0.002, self.carry_height)
            waypoint = np.array([*(gripper[:2] + lifted * heading), height])
            return self._action(gripper, waypoint, close=True, step_length=STEP_LENGTH)
        if opening < 2 * half + 0.004:  # closed on nothing (or just released): open first
            return self._action(gripper, gripper, close=False, step_length=STEP_LENGTH)
        offset = float(np.linalg.norm(cube[:2] - gripper[:2]))
        waypoint = np.array([*cube[:2], self._funnel(offset, cube[2], cube[2] + self.hover_height)])
        centred = np.linalg.norm(cube - gripper) < 0.008
        return self._action(gripper, waypoint, close=bool(centred), step_length=STEP_LENGTH)

    def _funnel(self, horizontal_error: float, low: float, high: float) -> float:
        return low + min(high - low, max(0.0, horizontal_error - 0.004) * self.funnel_slope)

    def _action(self, gripper: np.ndarray, waypoint: np.ndarray, *, close: bool, step_length: float) -> np.ndarray:
        delta = np.clip(self.gain * (waypoint - gripper) / step_length, -1.0, 1.0)
        return np.array([*delta, 1.0 if close else -1.0], dtype=np.float32)
