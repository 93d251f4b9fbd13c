"""Scripted experts for the public tasks of the generalization suite (none of them worldsim's).

Every expert follows :class:`worldsim.envs.experts.Expert`: the class is the factory (``Expert(seed=...)``),
``reset()`` starts an episode and ``expert(obs, info) -> action`` acts from what the env just returned. They
read the observation (and an ``info`` entry the env documents, where one helps) and never the simulator
behind ``env.unwrapped``, so they also drive recorded or remote observation streams.

Each suite task is a task file (:data:`SUITE`) that names its expert and goal-error function here; its env,
kwargs and success rule live in that file only. The tasks' packages are optional (``pip install
"worldsim[suite]"``): ``TaskSpec.make_env`` imports and registers what a task needs, so nothing here imports
them before a task is made.

Measured over reset seeds 0-99 (``benchmarks/results/public_experts.json``; ``docs/datasets.md`` has the table).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import mujoco
import numpy as np
import scipy.linalg

from worldsim.core.angles import wrap_angle


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _skew(a: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])


# --- gym-pusht: LeRobot's pymunk Push-T ------------------------------------------------------------------------

# gym-pusht's model, in its pixel units (the table is the 512 px square, y up). The T is two rectangles in the
# block's frame, whose origin is the middle of the bar's outer edge (the position the observation reports); the
# block turns about its centre of gravity, which gym-pusht sets to the mean of the two rectangles' centroids.
PUSHT_AGENT_RADIUS = 15.0
PUSHT_RECTANGLES = np.array([[-60.0, 60.0, 0.0, 30.0], [-15.0, 15.0, 30.0, 120.0]])  # x0, x1, y0, y1
PUSHT_COG = np.array([0.0, 45.0])
PUSHT_MASS, PUSHT_MOMENT = 1.0, 3000.0  # pymunk's block.mass and block.moment
PUSHT_GOAL = np.array([256.0, 256.0, np.pi / 4])
# The agent is a kinematic circle whose velocity a PD loop sets: 10 sub-steps of 10 ms per action.
PUSHT_KP, PUSHT_KV, PUSHT_DT, PUSHT_SUBSTEPS = 100.0, 20.0, 0.01, 10
PUSHT_TABLE = 512.0


def pusht_distance(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Distances (px) from points ``[N, 2]`` to gym-pusht's T at ``pose`` (x, y, angle), 0 inside."""
    local = (np.atleast_2d(points) - pose[:2]) @ _rotation(pose[2])
    distances = []
    for x0, x1, y0, y1 in PUSHT_RECTANGLES:
        dx = np.maximum(np.maximum(x0 - local[:, 0], local[:, 0] - x1), 0.0)
        dy = np.maximum(np.maximum(y0 - local[:, 1], local[:, 1] - y1), 0.0)
        distances.append(np.hypot(dx, dy))
    return np.min(distances, axis=0)


def _pusht_agent_maps() -> np.ndarray:
    """The agent's PD loop over one action, per axis: ``[[a, b, c], [d, e, f]]`` with ``p' = a p + b v + c u``
    and ``v' = d p + e v + f u`` (position ``p``, velocity ``v``, target ``u``); contacts never change it (the
    agent is kinematic). Found by running gym-pusht's update on unit inputs, in its order (velocity, then
    position with the new velocity)."""
    columns = []
    for p, v, u in ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)):
        for _ in range(PUSHT_SUBSTEPS):
            v = v + (PUSHT_KP * (u - p) - PUSHT_KV * v) * PUSHT_DT
            p = p + v * PUSHT_DT
        columns.append((p, v))
    return np.array(columns).T


def _pusht_primitives() -> tuple[np.ndarray, np.ndarray]:
    """Contact points on the T's faces and the inward push directions there, in the block frame (px).

    Points under the bar keep 30 px from the stem and points beside the stem 15 px below the bar, so the
    agent (radius 15) fits there touching one face only.
    """
    pairs = [((x, 0.0), (0.0, 1.0)) for x in (-50.0, -30.0, -15.0, 0.0, 15.0, 30.0, 50.0)]  # outer edge of the bar
    pairs += [((x, 30.0), (0.0, -1.0)) for x in (-45.0, 45.0)]  # under the bar, beside the stem
    pairs += [((sign * 60.0, 15.0), (-sign, 0.0)) for sign in (-1, 1)]  # ends of the bar
    pairs += [((x, 120.0), (0.0, -1.0)) for x in (-10.0, 0.0, 10.0)]  # end of the stem
    pairs += [((sign * 15.0, y), (-sign, 0.0)) for sign in (-1, 1) for y in (60.0, 85.0, 110.0)]  # sides of the stem
    points, normals = zip(*pairs, strict=True)
    return np.array(points), np.array(normals)


class GymPushTExpert:
    """Pushing controller for ``gym_pusht/PushT-v0`` (LeRobot's pymunk Push-T) with ``obs_type="state"``.

    Reads ``obs = [agent_x, agent_y, block_x, block_y, block_angle]`` and, where present, ``info["vel_agent"]``
    and ``info["goal_pose"]`` (gym-pusht reports both); without them it tracks the agent's velocity through
    the PD loop's own model and uses gym-pusht's fixed goal.

    The contacts are frictionless and the block keeps no velocity between physics steps (gym-pusht's space
    damping is 0), so a push moves the block only while it lasts: along the contact normal, turning it by
    the impulse's torque about its centre of gravity. At every step the expert scores a fixed set of push
    primitives (a contact point on a face and the inward normal there) by how well that motion matches the
    remaining pose error, less a cost for the agent's way to it; it keeps its primitive while it still
    helps (hysteresis), walks the agent round the block to the primitive's approach point without touching
    the block (hugging the T's outline, the way round that stays on the table), and pushes, by at most what
    the predicted motion needs to cancel the error, so the pushes slow down near the goal. Primitives whose
    contact the agent cannot reach (its targets are confined to the table) are never chosen. The PD target
    of each action is solved from the agent's dynamics so that the agent ends the step where it was sent.

    Multimodality: the way round the block is a per-episode coin flip whenever both ways are about as long,
    and near-ties between mirror-image primitives are broken by the same coin.

    Args:
        seed: seed of the expert's own generator (the per-episode coin).
    """

    rotation_length = 60.0  # px: one radian of angle error weighs as much as this position error
    travel_speed = 35.0  # px per step on the way to a contact
    push_speed = 15.0  # px per step while pushing, at most
    clearance = 6.0  # px kept between agent and block on the way round
    approach = 12.0  # px from the face where the straight approach to the contact starts
    keep_score = 0.3  # a primitive whose motion aligns less than this with the error is abandoned
    switch_margin = 0.5  # ...and another replaces it early only if better by this much
    travel_cost = 0.1  # score lost per 100 px of travel to a primitive's approach point

    def __init__(self, *, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._points, self._normals = _pusht_primitives()
        lever = self._points - PUSHT_COG
        torque = lever[:, 0] * self._normals[:, 1] - lever[:, 1] * self._normals[:, 0]
        # Impulse per unit of normal push, then the block's twist (velocity, rotation_length * spin) it causes.
        impulse = 1.0 / (1.0 / PUSHT_MASS + torque**2 / PUSHT_MOMENT)
        spin = torque / PUSHT_MOMENT * self.rotation_length
        self._effects = np.concatenate([self._normals / PUSHT_MASS, spin[:, None]], axis=1) * impulse[:, None]
        self._unit_effects = self._effects / np.linalg.norm(self._effects, axis=1, keepdims=True)
        self._maps = _pusht_agent_maps()
        self.reset()

    def reset(self) -> None:
        """Start a new episode: draw the coin, forget the primitive and the agent's tracked velocity."""
        self.side = 1 if self._rng.random() < 0.5 else -1
        self._primitive: int | None = None
        self._round_direction: float | None = None
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        agent, block = obs[0:2], obs[2:5]
        velocity = self._agent_velocity(info)
        goal = np.asarray(info["goal_pose"], dtype=np.float64) if "goal_pose" in info else PUSHT_GOAL
        rot = _rotation(block[2])
        error_cog = rot.T @ (goal[:2] + _rotation(goal[2]) @ PUSHT_COG - block[:2] - rot @ PUSHT_COG)
        desired = np.array([*error_cog, self.rotation_length * wrap_angle(goal[2] - block[2])])
        scores = self._unit_effects @ desired / max(float(np.linalg.norm(desired)), 1e-9)
        # Mirror-image primitives score alike; the episode's coin breaks such ties consistently.
        scores = scores + 0.03 * self.side * np.sign(self._points[:, 0])
        entries = block[:2] + (self._points - self._normals * (PUSHT_AGENT_RADIUS + self.approach)) @ rot.T
        touches = block[:2] + (self._points - self._normals * PUSHT_AGENT_RADIUS) @ rot.T
        reachable = np.all((touches > 2.0) & (touches < PUSHT_TABLE - 2.0), axis=1)
        scores = np.where(reachable, scores, -np.inf)
        choice = scores - self.travel_cost * np.linalg.norm(entries - agent, axis=1) / 100.0
        best = int(np.argmax(choice))
        if (
            self._primitive is None
            or scores[self._primitive] < self.keep_score
            or choice[best] > choice[self._primitive] + self.switch_margin
        ):
            if best != self._primitive:
                self._round_direction = None
            self._primitive = best
        k = self._primitive
        contact, normal = block[:2] + rot @ self._points[k], rot @ self._normals[k]
        # The normal push after which the predicted block motion has cancelled the error's share along it.
        push = max(0.0, float(self._effects[k] @ desired) / float(self._effects[k] @ self._effects[k]))
        waypoint = self._waypoint(agent, block, contact, normal, push)
        (a, b, c) = self._maps[0]
        target = np.clip((waypoint - a * agent - b * velocity) / c, 0.0, PUSHT_TABLE).astype(np.float32)
        self._last = (agent, velocity, target.astype(np.float64))  # the target as the env receives it
        return target

    def _agent_velocity(self, info: dict[str, Any]) -> np.ndarray:
        if "vel_agent" in info:
            return np.asarray(info["vel_agent"], dtype=np.float64)
        if self._last is None:
            return np.zeros(2)  # gym-pusht's agent starts every episode at rest
        position, velocity, target = self._last
        (d, e, f) = self._maps[1]
        return d * position + e * velocity + f * target

    def _waypoint(
        self, agent: np.ndarray, block: np.ndarray, contact: np.ndarray, normal: np.ndarray, push: float
    ) -> np.ndarray:
        """Where the agent should be at the end of this step."""
        tangent = np.array([-normal[1], normal[0]])
        offset = agent - (contact - normal * PUSHT_AGENT_RADIUS)
        lateral, depth = float(offset @ tangent), float(-(offset @ normal))
        if abs(lateral) < 3.0 and -5.0 < depth < PUSHT_AGENT_RADIUS + 20.0:  # in the approach corridor
            if depth > 2.0:  # short of the face: close in, square to it
                return agent + normal * min(depth, self.travel_speed) - tangent * lateral
            step = float(np.clip(0.5 * push, 0.5, self.push_speed))
            return agent + normal * step - tangent * lateral
        entry = contact - normal * (PUSHT_AGENT_RADIUS + self.approach)
        samples = agent + np.linspace(0.0, 1.0, 16)[:, None] * (entry - agent)
        if np.all(pusht_distance(samples, block) >= PUSHT_AGENT_RADIUS + self.clearance):
            self._round_direction = None
            way = entry - agent
            length = float(np.linalg.norm(way))
            return entry if length <= self.travel_speed else agent + way * (self.travel_speed / length)
        return self._go_round(agent, block, entry)

    def _hug_radius(self, centre: np.ndarray, block: np.ndarray, bearings: np.ndarray) -> np.ndarray:
        """Per bearing from the block's centre of gravity, the distance beyond which the agent clears the T."""
        radii = np.arange(10.0, 130.0, 4.0)
        rays = np.stack([np.cos(bearings), np.sin(bearings)], axis=-1)
        points = centre + rays[:, None, :] * radii[None, :, None]
        clear = pusht_distance(points.reshape(-1, 2), block).reshape(len(bearings), len(radii))
        blocked = np.where(clear < PUSHT_AGENT_RADIUS + self.clearance, np.arange(len(radii)), -1).max(axis=1)
        return radii[np.minimum(blocked + 1, len(radii) - 1)] + 6.0

    def _go_round(self, agent: np.ndarray, block: np.ndarray, entry: np.ndarray) -> np.ndarray:
        """A step round the block along its outline, towards the entry point's bearing."""
        centre = block[:2] + _rotation(block[2]) @ PUSHT_COG
        bearing = float(np.arctan2(*(agent - centre)[::-1]))
        gap = wrap_angle(float(np.arctan2(*(entry - centre)[::-1])) - bearing)
        if self._round_direction is None:
            # A way round that leaves the table is no way; of two, the short one unless both are about as long.
            spans, on_table = {}, {}
            for direction in (1.0, -1.0):
                span = gap if np.sign(gap) == direction else gap - direction * 2 * np.pi
                bearings = bearing + np.linspace(0.0, span, 24)
                rays = np.stack([np.cos(bearings), np.sin(bearings)], axis=-1)
                points = centre + self._hug_radius(centre, block, bearings)[:, None] * rays
                spans[direction] = abs(span)
                on_table[direction] = bool(np.all((points > 0.0) & (points < PUSHT_TABLE)))
            options = [direction for direction in (1.0, -1.0) if on_table[direction]] or [1.0, -1.0]
            if len(options) == 1:
                self._round_direction = options[0]
            elif abs(spans[1.0] - spans[-1.0]) < np.deg2rad(120):
                self._round_direction = float(self.side)
            else:
                self._round_direction = 1.0 if spans[1.0] < spans[-1.0] else -1.0
        distance = float(np.linalg.norm(agent - centre))
        new_bearing = bearing + self._round_direction * min(self.travel_speed / max(distance, 30.0), abs(gap))
        radius = float(self._hug_radius(centre, block, np.array([new_bearing]))[0])
        new_distance = distance + float(np.clip(radius - distance, -self.travel_speed, self.travel_speed))
        return centre + new_distance * np.array([np.cos(new_bearing), np.sin(new_bearing)])


# --- Gymnasium-Robotics Fetch ------------------------------------------------------------------------------------

FETCH_STEP = 0.05  # m: the mocap target's displacement for an action of 1 (Gymnasium-Robotics' scaling)
FETCH_OBJECT_HALF = 0.025  # m: half the side of the cube in FetchPush / FetchPickAndPlace
FETCH_OPEN, FETCH_CLOSE = 1.0, -1.0  # the gripper command: > 0 opens the fingers, < 0 closes them


def _fetch_action(grip: np.ndarray, target: np.ndarray, gripper: float) -> np.ndarray:
    """Move the grasp point towards ``target`` (at most one action's 5 cm), with a discrete gripper command."""
    return np.array([*np.clip((target - grip) / FETCH_STEP, -1.0, 1.0), gripper], dtype=np.float32)


class FetchReachExpert:
    """``FetchReach``: move the grasp point straight to ``desired_goal`` (the gripper command stays closed).

    Reads ``obs["observation"][0:3]`` (grasp point) and ``obs["desired_goal"]``. Deterministic (``seed`` is
    accepted for the factory protocol and unused).
    """

    def __init__(self, *, seed: int | None = None) -> None:
        del seed

    def reset(self) -> None:
        """Stateless."""

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        return _fetch_action(obs["observation"][0:3], obs["desired_goal"], FETCH_CLOSE)


class FetchPushExpert:
    """``FetchPush``: push the cube over the table onto the goal with the closed gripper.

    From the observation's grasp point and cube position: while the gripper is not low behind the cube on
    the line from the goal through the cube, it goes to a point 5.5 cm behind the cube (over the cube, 7 cm
    above it, when the straight way would sweep through it) and descends there; then it pushes along the line
    with a step of half the remaining distance (at most 3 cm: the cube slides on after a fast push) while
    correcting its sideways offset, and holds still once the cube is within 1 cm of the goal. The gripper
    command is always "closed" (Gymnasium-Robotics blocks FetchPush's fingers anyway). Deterministic.
    """

    standoff = FETCH_OBJECT_HALF + 0.03  # m behind the cube's centre where the push starts
    safe_height = 0.07  # m above the cube's centre when passing over it

    def __init__(self, *, seed: int | None = None) -> None:
        del seed

    def reset(self) -> None:
        """Stateless."""

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        grip, cube, goal = obs["observation"][0:3], obs["observation"][3:6], obs["desired_goal"]
        to_goal = goal[:2] - cube[:2]
        distance = float(np.linalg.norm(to_goal))
        if distance < 0.01:
            return np.array([0.0, 0.0, 0.0, FETCH_CLOSE], dtype=np.float32)
        direction = to_goal / distance
        low = cube[2]
        offset = grip[:2] - cube[:2]
        along = float(offset @ direction)
        sideways = offset - along * direction
        if along < -(FETCH_OBJECT_HALF + 0.005) and np.linalg.norm(sideways) < 0.015 and grip[2] < low + 0.02:
            step = min(0.5 * distance, 0.03)
            return _fetch_action(grip, np.array([*(grip[:2] + direction * step - 0.5 * sideways), low]), FETCH_CLOSE)
        behind = cube[:2] - direction * self.standoff
        if np.linalg.norm(grip[:2] - behind) < 0.015:
            return _fetch_action(grip, np.array([*behind, low]), FETCH_CLOSE)
        # Closest approach of the straight way to the cube: travel low only if it keeps clear of the cube.
        way = behind - grip[:2]
        fraction = np.clip(((cube[:2] - grip[:2]) @ way) / max(float(way @ way), 1e-9), 0.0, 1.0)
        in_the_way = np.linalg.norm(grip[:2] + fraction * way - cube[:2]) < FETCH_OBJECT_HALF + 0.04
        safe = low + self.safe_height
        if in_the_way and grip[2] < safe - 0.02:
            return _fetch_action(grip, np.array([*grip[:2], safe]), FETCH_CLOSE)
        return _fetch_action(grip, np.array([*behind, safe if in_the_way else low]), FETCH_CLOSE)


class FetchPickAndPlaceExpert:
    """``FetchPickAndPlace``: grasp the cube and carry it to the goal (on the table or in the air).

    From the observation's grasp point, cube position and finger positions: with the cube held (centred
    between fingers closed on it) it carries the cube so that the cube's centre reaches the goal; otherwise
    it goes above the cube (keeping at least 6 cm above it until it is within 3 cm horizontally) with the
    fingers open, descends onto it and closes them. A dropped cube is simply picked up again. The gripper
    command is exactly +1 (open) or -1 (close). Deterministic.
    """

    hover = 0.06  # m above the cube's centre before descending

    def __init__(self, *, seed: int | None = None) -> None:
        del seed

    def reset(self) -> None:
        """Stateless."""

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        observation = obs["observation"]
        grip, cube, goal = observation[0:3], observation[3:6], obs["desired_goal"]
        gap = float(observation[9] + observation[10])  # the two fingers' joint positions: the opening
        offset = cube - grip
        horizontal = float(np.linalg.norm(offset[:2]))
        closed_on_cube = 2 * FETCH_OBJECT_HALF - 0.02 < gap < 2 * FETCH_OBJECT_HALF + 0.005
        if horizontal < 0.02 and abs(offset[2]) < 0.02 and closed_on_cube:
            return _fetch_action(grip, goal - offset, FETCH_CLOSE)
        if horizontal > 0.01:
            height = cube[2] + self.hover if horizontal <= 0.03 else max(cube[2] + self.hover, grip[2])
            return _fetch_action(grip, np.array([*cube[:2], height]), FETCH_OPEN)
        if abs(offset[2]) > 0.01:
            return _fetch_action(grip, cube, FETCH_OPEN)
        return _fetch_action(grip, cube, FETCH_CLOSE)


# --- Gymnasium MuJoCo: Pusher and InvertedDoublePendulum -------------------------------------------------------


def _gymnasium_asset(name: str) -> str:
    """Path of an MJCF file shipped with Gymnasium's MuJoCo environments (the file the env itself loads)."""
    import gymnasium.envs.mujoco

    return os.path.join(os.path.dirname(gymnasium.envs.mujoco.__file__), "assets", name)


class PusherExpert:
    """``Pusher-v5``: carry the object towards the goal in the U of the arm's end effector.

    Pusher's arm ends in a U-shaped fork (a bar with two prongs, 16 cm apart inside, the only part that
    touches the object); the observation's ``tips_arm`` is the bar's centre. The expert keeps a private copy
    of the env's own MJCF (Gymnasium's ``pusher.xml``) only for kinematics: it sets the observed joint angles
    and solves, by damped least squares, for joint angles that put a point 7 cm inside the U (where the
    object's centre rests against the bar) at a target, with the fork flat and, softly, pointing along the
    push (or against it: then the back of the bar pushes). The targets: above the object, down around it,
    then 4 cm beyond the object towards the goal, so the bar keeps pressing it; a reference walks to each
    target at 4 cm per step, and the torques are a PD law on the solved joint angles, capped at 0.7
    (the reward charges 0.1 per squared unit of torque).

    Pusher's object is nearly massless and damped, and its soft contact lets a fast bar pass through it, so
    it moves only about 1-2 mm per step however hard it is pushed: over 100 steps the object gets closer to
    the goal, rarely onto it. Near the arm's base the object is out of the flat fork's reach. Deterministic.
    """

    kp, kd = 8.0, 1.0  # PD gains on the solved joint angles
    max_torque = 0.7
    cradle = 0.07  # m from the bar's centre to the object's centre when it rests against the bar
    press = 0.04  # m the target leads the object towards the goal (deeper and the bar slips through)
    fork_height = -0.29  # m: the fork's height while pushing (the object's centre is at -0.275, the table -0.325)
    travel_step = 0.04  # m per step the reference moves
    weights = (10.0, 0.5, 0.15)  # least-squares weights: position, flatness, direction
    starts = (
        np.zeros(7),
        np.array([0.0, 1.0, 0.0, -1.5, 0.0, -0.5, 0.0]),
        np.array([0.5, 0.5, 0.0, -2.0, 0.0, -0.5, 0.0]),
        np.array([0.3, 1.2, 1.2, -1.8, 0.0, -0.5, 0.0]),
        np.array([0.3, 1.2, -1.2, -1.8, 0.0, -0.5, 0.0]),
    )

    def __init__(self, *, seed: int | None = None) -> None:
        del seed
        self._model = mujoco.MjModel.from_xml_path(_gymnasium_asset("pusher.xml"))
        self._data = mujoco.MjData(self._model)
        self._fork = self._model.body("tips_arm").id
        margin = 1e-3
        self._low, self._high = self._model.jnt_range[:7, 0] + margin, self._model.jnt_range[:7, 1] - margin
        self.reset()

    def reset(self) -> None:
        """Start a new episode: forget the reference, the solution and the phase."""
        self._q_ref: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._holding = self._descending = False
        self._mode: str | None = None

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        q, qdot, obj, goal = obs[0:7], obs[7:14], obs[17:20], obs[20:23]
        centre, frame, *_ = self._kinematics(q)
        target, direction = self._target(centre, frame, obj, goal)
        if self._reference is None:
            self._reference = centre.copy()
        way = target - self._reference
        length = float(np.linalg.norm(way))
        self._reference = target if length <= self.travel_step else self._reference + way * (self.travel_step / length)
        self._q_ref = self._solve(q, self._reference, direction)
        torque = self.kp * (self._q_ref - q) - self.kd * qdot
        return np.clip(torque, -self.max_torque, self.max_torque).astype(np.float32)

    def _kinematics(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The U's centre, the fork's frame, and their Jacobians (position; rotation) for joint angles ``q``."""
        self._data.qpos[:7] = q
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_comPos(self._model, self._data)  # the Jacobians read the bodies' com-based frames
        jacp, jacr = np.zeros((3, self._model.nv)), np.zeros((3, self._model.nv))
        mujoco.mj_jacBody(self._model, self._data, jacp, jacr, self._fork)
        frame = self._data.xmat[self._fork].reshape(3, 3).copy()
        lever = self.cradle * frame[:, 0]
        centre = self._data.xpos[self._fork] + lever
        return centre, frame, jacp[:, :7] - _skew(lever) @ jacr[:, :7], jacr[:, :7]

    def _residual(self, centre: np.ndarray, frame: np.ndarray, target: np.ndarray, direction: np.ndarray):
        w_pos, w_flat, w_dir = self.weights
        along = np.array([*direction, 0.0])
        return np.concatenate([w_pos * (centre - target), w_flat * frame[2, :2], w_dir * (frame[:, 0] - along)])

    def _ik(self, q: np.ndarray, target: np.ndarray, direction: np.ndarray, iterations: int):
        w_pos, w_flat, w_dir = self.weights
        q = q.copy()
        for _ in range(iterations):
            centre, frame, jac_centre, jac_rot = self._kinematics(q)
            jac_x, jac_y = -_skew(frame[:, 0]) @ jac_rot, -_skew(frame[:, 1]) @ jac_rot
            jac = np.vstack([w_pos * jac_centre, w_flat * jac_x[2:3], w_flat * jac_y[2:3], w_dir * jac_x])
            residual = self._residual(centre, frame, target, direction)
            step = -np.linalg.solve(jac.T @ jac + 1e-3 * np.eye(7), jac.T @ residual)
            q = np.clip(q + np.clip(step, -0.3, 0.3), self._low, self._high)
        centre, frame, *_ = self._kinematics(q)
        return q, float(np.sum(self._residual(centre, frame, target, direction) ** 2))

    def _solve(self, q: np.ndarray, target: np.ndarray, direction: np.ndarray) -> np.ndarray:
        # Warm-started from the last solution; a poor fit is retried from a few postures (other IK branches).
        best = self._ik(self._q_ref if self._q_ref is not None else q, target, direction, 20)
        if best[1] > 2e-3:
            for start in self.starts:
                candidate = self._ik(start, target, direction, 40)
                if candidate[1] < best[1] - 1e-6:
                    best = candidate
        return best[0]

    def _target(self, centre: np.ndarray, frame: np.ndarray, obj: np.ndarray, goal: np.ndarray):
        to_goal = goal[:2] - obj[:2]
        distance = float(np.linalg.norm(to_goal))
        direction = to_goal / max(distance, 1e-9)
        fork = frame[:2, 0] / max(float(np.linalg.norm(frame[:2, 0])), 1e-9)
        if self._mode is None or not (self._descending or self._holding):
            self._mode = "cradle" if fork @ direction >= -0.2 else "back"
        if self._mode == "cradle":  # the object inside the U: the bar (or a prong, across the push) pushes
            rest, press, prefer = obj[:2], self.press + 0.03 * (1 - max(float(fork @ direction), 0.0)), direction
        else:  # the U opens away from the goal: the back of the bar pushes
            rest, press, prefer = obj[:2] - direction * 0.16, self.press + 0.02, -direction
        offset = float(np.linalg.norm(centre[:2] - rest))
        if centre[2] < self.fork_height + 0.03 and offset < 0.045:
            self._holding = True
        elif offset > 0.07 + press:
            self._holding = False
        if self._holding:
            return np.array([*(rest + direction * min(press, distance)), self.fork_height]), prefer
        if offset < 0.02 or (self._descending and offset < 0.04):
            self._descending = True
            return np.array([*rest, self.fork_height]), prefer
        self._descending = False
        return np.array([*rest, self.fork_height + 0.1]), prefer


class InvertedDoublePendulumExpert:
    """``InvertedDoublePendulum-v5``: an LQR balancing the two poles upright, from the observation.

    At construction it linearizes the env's own model (Gymnasium's ``inverted_double_pendulum.xml``, loaded
    privately) about the upright rest by central finite differences of one control step (5 physics steps:
    the model's RK4 integrator rules out MuJoCo's analytic derivatives) and solves the discrete-time Riccati
    equation. The state ``(cart position, pole angles, velocities)`` comes from the observation (the angles
    from their sines and cosines); the force command is ``-K x``, clipped to the action range.
    Deterministic.
    """

    frame_skip = 5  # InvertedDoublePendulum-v5's default: one action lasts 5 physics steps
    state_cost = (1.0, 100.0, 100.0, 0.1, 1.0, 1.0)  # cart, pole 1, pole 2, and their velocities
    control_cost = 1.0

    def __init__(self, *, seed: int | None = None) -> None:
        del seed
        model = mujoco.MjModel.from_xml_path(_gymnasium_asset("inverted_double_pendulum.xml"))
        data = mujoco.MjData(model)
        nv, nu = model.nv, model.nu

        def control_step(state: np.ndarray, control: np.ndarray) -> np.ndarray:
            mujoco.mj_resetData(model, data)
            data.qpos[:], data.qvel[:], data.ctrl[:] = state[:nv], state[nv:], control
            mujoco.mj_step(model, data, nstep=self.frame_skip)
            return np.concatenate([data.qpos, data.qvel])

        eps, rest, still = 1e-5, np.zeros(2 * nv), np.zeros(nu)
        a = np.stack([(control_step(rest + eps * e, still) - control_step(rest - eps * e, still)) / (2 * eps)
                      for e in np.eye(2 * nv)], axis=1)  # fmt: skip
        b = np.stack([(control_step(rest, still + eps * e) - control_step(rest, still - eps * e)) / (2 * eps)
                      for e in np.eye(nu)], axis=1)  # fmt: skip
        q, r = np.diag(self.state_cost), self.control_cost * np.eye(nu)
        p = scipy.linalg.solve_discrete_are(a, b, q, r)
        self.gain = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)

    def reset(self) -> None:
        """Stateless."""

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        # obs = [x, sin t1, sin t2, cos t1, cos t2, xdot, t1dot, t2dot, constraint force]
        state = np.array([obs[0], np.arctan2(obs[1], obs[3]), np.arctan2(obs[2], obs[4]), *obs[5:8]])
        return np.clip(-self.gain @ state, -1.0, 1.0).astype(np.float32)


# --- Gymnasium Box2D: LunarLanderContinuous ----------------------------------------------------------------------


class LunarLanderExpert:
    """``LunarLanderContinuous-v3``: Gymnasium's own landing heuristic, from the observation alone.

    ``gymnasium.envs.box2d.lunar_lander.heuristic(env, s)`` reads the env only to know whether its actions
    are continuous; the expert hands it a stand-in that says so, and the observation. Deterministic.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        del seed
        from gymnasium.envs.box2d.lunar_lander import heuristic

        self._heuristic = heuristic
        self._continuous = SimpleNamespace(unwrapped=SimpleNamespace(continuous=True))

    def reset(self) -> None:
        """Stateless."""

    def __call__(self, obs: Any, info: dict[str, Any]) -> np.ndarray:
        return np.asarray(self._heuristic(self._continuous, obs), dtype=np.float32)


# --- final goal errors -------------------------------------------------------------------------------------------


def goal_distance(obs: Any, info: dict[str, Any]) -> float:
    """Goal-conditioned envs (Gymnasium-Robotics): distance from ``achieved_goal`` to ``desired_goal`` (m)."""
    return float(np.linalg.norm(np.asarray(obs["achieved_goal"]) - np.asarray(obs["desired_goal"])))


def pusher_goal_distance(obs: Any, info: dict[str, Any]) -> float:
    """Pusher: horizontal distance from the object's centre to the goal's (m); their heights differ by a
    constant 4.8 cm (object centre vs goal disc), which Pusher's own reward distance includes."""
    obs = np.asarray(obs)
    return float(np.linalg.norm(obs[17:19] - obs[20:22]))


def pusht_goal_distance(obs: Any, info: dict[str, Any]) -> float:
    """gym-pusht: distance from the block's position to the goal pose's (px; the 512 px table)."""
    goal = np.asarray(info["goal_pose"]) if "goal_pose" in info else PUSHT_GOAL
    return float(np.linalg.norm(np.asarray(obs)[2:4] - goal[:2]))


# --- the suite -------------------------------------------------------------------------------------------------

SUITE: tuple[str, ...] = (
    "gym_pusht", "fetch_reach", "fetch_push", "fetch_pick_and_place", "pusher", "inverted_double_pendulum",
    "lunar_lander",
)  # fmt: skip
"""The generalization suite: task files of ``worldsim/conf/task/`` (env, kwargs, expert, success and
goal-error rules), none of them worldsim's own. ``load_task(name).make_env()`` imports and registers what a
task's env needs."""


def fix_gymnasium_robotics_joint_access() -> None:
    """Make Gymnasium-Robotics' joint accessors work with the installed MuJoCo, where they are broken.

    ``gymnasium_robotics.utils.mujoco_utils`` (1.4.2) checks a joint's type with ``joint_type in
    (mjtJoint.mjJNT_HINGE, mjtJoint.mjJNT_SLIDE)``; with MuJoCo 4's enums that comparison of an enum with a
    numpy integer is false, so every Fetch env fails to build (``AssertionError`` in ``set_joint_qpos``).
    Where that is so, its four joint accessors are replaced by equivalents that compare integers; elsewhere
    nothing changes.
    """
    hinge = mujoco.mjtJoint.mjJNT_HINGE
    if hinge == np.int32(int(hinge)):  # the library's own check works here
        return
    from gymnasium_robotics.utils import mujoco_utils

    if getattr(mujoco_utils, "_worldsim_joint_access", False):
        return
    widths = {
        int(mujoco.mjtJoint.mjJNT_FREE): (7, 6),
        int(mujoco.mjtJoint.mjJNT_BALL): (4, 3),
        int(mujoco.mjtJoint.mjJNT_SLIDE): (1, 1),
        int(hinge): (1, 1),
    }

    def span(model, name: str, velocity: bool) -> slice:
        joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if joint == -1:
            raise ValueError(f"joint {name!r} is not part of the model")
        width = widths[int(model.jnt_type[joint])][1 if velocity else 0]
        start = int(model.jnt_dofadr[joint] if velocity else model.jnt_qposadr[joint])
        return slice(start, start + width)

    def set_joint_qpos(model, data, name, value):
        data.qpos[span(model, name, False)] = value

    def set_joint_qvel(model, data, name, value):
        data.qvel[span(model, name, True)] = value

    def get_joint_qpos(model, data, name):
        return data.qpos[span(model, name, False)].copy()

    def get_joint_qvel(model, data, name):
        return data.qvel[span(model, name, True)].copy()

    mujoco_utils.set_joint_qpos, mujoco_utils.set_joint_qvel = set_joint_qpos, set_joint_qvel
    mujoco_utils.get_joint_qpos, mujoco_utils.get_joint_qvel = get_joint_qpos, get_joint_qvel
    mujoco_utils._worldsim_joint_access = True
