"""ZeroMQ bridge for live control loops: wire protocol, policy and world-model servers, clients, control loop.

Torch-free: serving a numpy or ONNX policy, the clients and the control loop import neither torch nor MuJoCo.
The protocol is specified in docs/protocol.md; live control is described in docs/live_control.md.
"""

from worldsim.bridge.action_schedule import ActionSchedule, ChunkTiming
from worldsim.bridge.connection import ClientConfig, NotConnectedError, ServerError, ServerInfo
from worldsim.bridge.control_loop import ControlLoop, ControlLoopConfig, EpisodeResult, LoopStats, chunk_boundary_jumps
from worldsim.bridge.delay_simulator import DelayConfig, DelaySimulator
from worldsim.bridge.policy_client import ChunkReply, PolicyClient
from worldsim.bridge.policy_server import PolicyServer
from worldsim.bridge.protocol import PROTOCOL_VERSION, Limits, ProtocolError
from worldsim.bridge.security import CurveClientKeys, CurveServerKeys, generate_keypair
from worldsim.bridge.server import ServerConfig, ServerStats
from worldsim.bridge.world_model_client import WorldModelClient
from worldsim.bridge.world_model_server import WorldModelServer

__all__ = [
    "PROTOCOL_VERSION",
    "ActionSchedule",
    "ChunkReply",
    "ChunkTiming",
    "ClientConfig",
    "ControlLoop",
    "ControlLoopConfig",
    "CurveClientKeys",
    "CurveServerKeys",
    "DelayConfig",
    "DelaySimulator",
    "EpisodeResult",
    "Limits",
    "LoopStats",
    "NotConnectedError",
    "PolicyClient",
    "PolicyServer",
    "ProtocolError",
    "ServerConfig",
    "ServerError",
    "ServerInfo",
    "ServerStats",
    "WorldModelClient",
    "WorldModelServer",
    "chunk_boundary_jumps",
    "generate_keypair",
]
