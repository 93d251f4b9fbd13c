"""Serve a policy or a world model over ZeroMQ (``worldsim serve`` runs this with Hydra configs).

    python -m worldsim.bridge.serve policy --checkpoint pickplace-state --strategy rti --option k=3
    python -m worldsim.bridge.serve policy --onnx policy.onnx --strategy rti --option k=3      # no torch
    python -m worldsim.bridge.serve policy --factory my_pkg.my_mod:make_policy --address tcp://127.0.0.1:5555
    python -m worldsim.bridge.serve world-model --checkpoint wm-pusht-state
    python -m worldsim.bridge.serve world-model --factory my_pkg.my_mod:make_session
    python -m worldsim.bridge.serve policy --factory ... --address tcp://0.0.0.0:5555 \\
        --curve-secret keys/server.key_secret --allow keys/clients/

``--factory`` names a callable that returns a new model instance per client; ``--checkpoint`` (a shipped
name or a directory) serves a diffusion policy with ``--strategy`` or a world model, ``--onnx`` (an
exported file) a policy without torch. Once bound, the script prints one line
``serving <kind> on <endpoint> ...`` on stdout; it serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
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


def _strategy_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option must look like KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def checkpoint_factory(args: argparse.Namespace) -> Callable[[], Any]:
    """One model instance per client (its own queues and warm start, or its own cache) from a file.

    Policies come from ``--checkpoint`` or ``--onnx``; world models from ``--checkpoint``, loaded once and
    shared by the clients' streaming sessions (the weights are read-only at inference).
    """
    if args.kind == "world-model":
        if args.onnx:
            raise ValueError("--onnx serves policies; serve a world model with --checkpoint or --factory")
        from worldsim.world_model.model import WorldModel
        from worldsim.world_model.session import StreamingSession

        return functools.partial(StreamingSession, WorldModel.from_pretrained(args.checkpoint))
    options = _strategy_options(args.option)
    if args.onnx:
        from worldsim.export.onnx_policy import OnnxPolicy

        make = functools.partial(OnnxPolicy, args.onnx, strategy=args.strategy, **options)
    else:
        from worldsim.policies.diffusion_policy import DiffusionPolicy

        make = functools.partial(DiffusionPolicy.from_pretrained, args.checkpoint, strategy=args.strategy, **options)
    make()  # fail now, with a clear message, rather than on the first client
    return make


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worldsim.bridge.serve", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("policy", "world-model"))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--factory", help="module:callable returning one model instance per client")
    source.add_argument("--checkpoint", help="a policy or world-model checkpoint (shipped name or directory)")
    source.add_argument("--onnx", help="policy only: an exported policy .onnx file (served without torch)")
    parser.add_argument("--strategy", default="rti", help="ddpm, ddim, rti or rolling (with --checkpoint/--onnx)")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a strategy option, e.g. k=3 (repeatable)"
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
    factory = load_factory(args.factory) if args.factory else checkpoint_factory(args)
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
