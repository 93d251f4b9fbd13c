"""Generate CURVE key pairs for the bridge.

    python -m worldsim.bridge.keys generate DIR [--name server] [--name client ...]

writes ``DIR/NAME.key`` (public: give it to the other side) and ``DIR/NAME.key_secret`` (private, mode 600)
for each name (default: ``server`` and ``client``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from worldsim.bridge.security import generate_keypair


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worldsim.bridge.keys", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="write key pairs into a directory")
    generate.add_argument("directory")
    generate.add_argument("--name", action="append", help="key pair name (repeatable; default: server, client)")
    args = parser.parse_args(argv)
    for name in args.name or ["server", "client"]:
        if not name.isidentifier():
            parser.error(f"key names must be simple identifiers, got {name!r}")
        public, secret = generate_keypair(args.directory, name)
        print(f"{name}: public {public}  secret {secret}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
