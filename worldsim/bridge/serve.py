"""Serve a policy or a world model over ZeroMQ (a script until the ``worldsim`` CLI lands).

    python -m worldsim.bridge.serve policy --factory my_pkg.my_mod:make_policy --address tcp://127.0.0.1:5555
    python -m worldsim.bridge.serve world-model --factory my_pkg.my_mod:make_session
    python -m worldsim.bridge.serve policy --factory ... --address tcp://0.0.0.0:5555 \\
        --curve-secret keys/server.key_secret --allow keys/clients/

``--factory`` names a callable that returns a new model instance per client. Once bound, the script
prints one line ``serving <kind> on <endpoint> ...`` on stdout; it serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from worldsim.bridge.policy_server import PolicyServer
from worldsim.bridge.security import CurveServerKeys
from worldsim.bridge.server import Server, ServerConfig
from worldsim.bridge.world_model_server import WorldModelServer


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worldsim.bridge.serve", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("policy", "world-model"))
    parser.add_argument("--factory", required=True, help="module:callable returning one model instance per client")
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


def build_server(args: argparse.Namespace) -> Server:
    if args.allow and not args.curve_secret:
        raise ValueError("--allow needs --curve-secret")
    curve = CurveServerKeys.from_files(args.curve_secret, args.allow) if args.curve_secret else None
    config = ServerConfig(
        address=args.address,
        session_timeout_s=args.session_timeout,
        max_sessions=args.max_sessions,
        curve=curve,
        allow_insecure=args.insecure,
    )
    factory = load_factory(args.factory)
    if args.kind == "policy":
        return PolicyServer(factory, config)
    return WorldModelServer(factory, config, max_context_frames=args.max_context_frames)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        server = build_server(args)
    except (ValueError, TypeError, ImportError, AttributeError, FileNotFoundError) as error:
        parser.error(str(error))
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.start()
    security = "CURVE on" if args.curve_secret else "CURVE off: unencrypted, local clients only"
    print(f"serving {server.model_kind} on {server.address} ({security})", flush=True)
    try:
        while server.running:
            server.join(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
