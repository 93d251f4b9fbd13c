"""Serve a policy or a world model over ZeroMQ: any object with the policy or session API it is handed.

    python -m worldsim.bridge.serve policy --factory my_pkg.my_mod:make_policy --address tcp://127.0.0.1:5555
    python -m worldsim.bridge.serve world-model --factory my_pkg.my_mod:make_session
    python -m worldsim.bridge.serve policy --factory ... --address tcp://0.0.0.0:5555 \\
        --curve-secret keys/server.key_secret --allow keys/clients/

``--factory`` names a callable that returns a new model instance per client. The bridge builds no model
itself and imports none of worldsim's models: ``worldsim serve`` builds a factory from a checkpoint or an
ONNX file and calls ``serve_forever``. Once bound, one line ``serving <kind> on <endpoint> (...)`` is
printed on stdout; the server runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from worldsim.bridge.policy_server import PolicyServer
from worldsim.bridge.security import CurveServerKeys, is_local_endpoint
from worldsim.bridge.server import Server, ServerConfig
from worldsim.bridge.world_model_server import WorldModelServer

KINDS = ("policy", "world-model")


def load_factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``module.path:attribute``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--factory must look like 'package.module:callable', got {spec!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{spec} is not callable")
    return target


def make_server(kind: str, factory: Callable[[], Any], config: ServerConfig, *, max_context_frames: int = 64) -> Server:
    """A ``PolicyServer`` (``kind="policy"``) or ``WorldModelServer`` (``"world-model"``) over ``factory``.

    The factory is called once here (the served object's spaces and sizes are read from that instance), so
    a model that cannot be built fails now, in the caller, rather than on the first client.
    """
    if kind == "policy":
        return PolicyServer(factory, config)
    if kind in ("world-model", "world_model"):
        return WorldModelServer(factory, config, max_context_frames=max_context_frames)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def describe_security(config: ServerConfig) -> str:
    """The parenthesis of the ``serving ...`` line: whether traffic is encrypted and who can reach it."""
    if config.curve is not None:
        return f"CURVE on: {len(config.curve.allowed_clients)} allowed client keys"
    if is_local_endpoint(config.address):
        return "CURVE off: unencrypted, local clients only"
    return "CURVE off: unencrypted and reachable from the network (insecure)"


def serve_forever(
    kind: str,
    factory: Callable[[], Any],
    config: ServerConfig,
    *,
    max_context_frames: int = 64,
    announce: Callable[[str], Any] = print,
) -> int:
    """Serve ``factory``'s objects until SIGINT or SIGTERM; returns the exit status (0).

    Args:
        kind: ``"policy"`` (objects with the policy API: spaces, ``obs_horizon``, ``horizon``,
            ``n_action_steps``, ``reset()``, ``predict_chunk(obs_history)``) or ``"world-model"`` (streaming
            sessions: spaces, ``reset(context_obs, context_actions)``, ``step(action)``; the wire's
            spelling ``"world_model"`` is accepted too).
        factory: called with no arguments, returns a new instance per client (instances may share
            weights). It is called once before binding, so a model that cannot be built raises here.
        config: address, session timeout, session count, limits, CURVE keys.
        max_context_frames: world models only: the most context frames a ``reset`` may carry.
        announce: receives the one line ``serving <kind> on <endpoint> (<security>)`` once the socket is
            bound (the endpoint with the port chosen for ``tcp://HOST:*``); ``print`` by default, which a
            parent process can wait for on stdout (the line is flushed).

    Raises what building the server raises (``TypeError`` for an object without the API, the factory's
    own errors, ``ValueError`` for a bad ``kind``) and ``zmq.ZMQError`` when the address cannot be bound;
    nothing a client sends ends it. Call it from the main thread: SIGTERM is then handled like SIGINT (a
    clean stop), and the previous SIGTERM handler is put back on return. (Python delivers signals to the main
    thread only; to serve from another thread, use ``make_server(...)`` and its ``start()`` / ``stop()``.)

    The face layer calls it as ``serve_forever("policy", functools.partial(OnnxPolicy, path, ...),
    ServerConfig(address=...))``.
    """
    server = make_server(kind, factory, config, max_context_frames=max_context_frames)
    # signal.signal only works in the main thread (elsewhere it raises): there is nothing to install then.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: server.stop(0)) if in_main_thread else None
    try:
        server.start()
        announce(f"serving {server.model_kind} on {server.address} ({describe_security(config)})")
        sys.stdout.flush()  # a parent process waits for this line on a pipe, where print is block-buffered
        try:
            while server.running:
                server.join(0.2)
        except KeyboardInterrupt:
            pass
    finally:
        server.stop()
        if previous is not None:  # (None: the previous handler was not installed from Python)
            signal.signal(signal.SIGTERM, previous)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worldsim.bridge.serve", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument(
        "--factory", required=True, help="module:callable returning one model instance per client (no arguments)"
    )
    parser.add_argument("--address", default="tcp://127.0.0.1:5555", help="endpoint to bind (default: %(default)s)")
    parser.add_argument("--curve-secret", help="the server's NAME.key_secret file: turns on CURVE")
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        help="public key file or directory of *.key files of an admitted client (repeatable)",
    )
    parser.add_argument("--insecure", action="store_true", help="allow a non-local address without CURVE")
    parser.add_argument("--session-timeout", type=float, default=30.0, help="seconds until an idle client is forgotten")
    parser.add_argument("--max-sessions", type=int, default=16)
    parser.add_argument("--max-context-frames", type=int, default=64, help="world model only")
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if args.allow and not args.curve_secret:
        raise ValueError("--allow needs --curve-secret")
    curve = CurveServerKeys.from_files(args.curve_secret, args.allow) if args.curve_secret else None
    return ServerConfig(
        address=args.address,
        session_timeout_s=args.session_timeout,
        max_sessions=args.max_sessions,
        curve=curve,
        allow_insecure=args.insecure,
    )


def build_server(args: argparse.Namespace) -> Server:
    """The server the command line describes (not started)."""
    config = config_from_args(args)
    return make_server(args.kind, load_factory(args.factory), config, max_context_frames=args.max_context_frames)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        factory = load_factory(args.factory)
        return serve_forever(args.kind, factory, config, max_context_frames=args.max_context_frames)
    except (ValueError, TypeError, ImportError, AttributeError, FileNotFoundError) as error:
        parser.error(str(error))
    except zmq.ZMQError as error:  # most often: the address is taken or not an interface of this machine
        parser.error(f"cannot bind {args.address}: {error}")


if __name__ == "__main__":
    sys.exit(main())
