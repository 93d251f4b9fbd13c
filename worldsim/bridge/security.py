"""CURVE encryption and client authentication, and the loopback-only rule for servers without keys.

Key files are ZeroMQ certificates in the layout of pyzmq's ``zmq.auth`` and CZMQ's ``zcert`` (ZPL text),
byte for byte as in docs/protocol.md: ``NAME.key`` holds the public key, ``NAME.key_secret`` both keys, each
as 40 Z85 characters. A server knows its own secret file and the public keys of the clients it admits; a
client knows the server's public key and its own secret file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

log = logging.getLogger(__name__)

# What ``generate_keypair`` writes, ASCII with LF line ends (docs/protocol.md quotes these bytes). There is no
# date line, unlike pyzmq's own writer, so a file's bytes depend on its keys alone.
PUBLIC_KEY_FILE = (
    "#   ZeroMQ CURVE Public Certificate\n"
    "#   Written by worldsim (python -m worldsim.bridge.keys): give it to the other side.\n"
    "\n"
    "metadata\n"
    "curve\n"
    '    public-key = "{public}"\n'
)
SECRET_KEY_FILE = (
    "#   ZeroMQ CURVE **Secret** Certificate\n"
    "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
    "\n"
    "metadata\n"
    "curve\n"
    '    public-key = "{public}"\n'
    '    secret-key = "{secret}"\n'
)


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (keep private, mode 600) into ``directory``."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public_key, secret_key = (key.decode("ascii") for key in zmq.curve_keypair())
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    public.write_text(PUBLIC_KEY_FILE.format(public=public_key), encoding="ascii", newline="\n")
    # Created with mode 600 rather than chmod-ed after writing: the secret is never readable by others.
    descriptor = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii", newline="\n") as file:
        os.fchmod(file.fileno(), 0o600)  # (an existing file keeps its mode through O_CREAT)
        file.write(SECRET_KEY_FILE.format(public=public_key, secret=secret_key))
    return public, secret


def _z85_key(key: bytes | None, path: Path, which: str) -> bytes | None:
    """``key`` if it is a CURVE key in Z85 (40 characters, 32 bytes), else a clear ``ValueError``."""
    if key is None:
        return None
    try:
        valid = len(key) == 40 and len(z85.decode(key)) == 32
    except Exception:  # z85.decode raises KeyError or ValueError on characters outside the alphabet
        valid = False
    if not valid:
        raise ValueError(f"{path}: the {which} key is not 40 Z85 characters")
    return key


def _load(path: str | Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no key file at {path}")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except Exception as error:  # zmq raises bare ValueErrors/KeyErrors for broken certificate files
        raise ValueError(f"{path} is not a ZeroMQ certificate: {error}") from None
    if need_secret and not secret:
        raise ValueError(f"{path} holds no secret key (use the NAME.key_secret file)")
    return _z85_key(public, path, "public"), _z85_key(secret, path, "secret")


def load_public_keys(paths: list[str | Path]) -> frozenset[bytes]:
    """Public keys (Z85) from certificate files and from every ``*.key`` file of the given directories."""
    keys = set()
    for path in map(Path, paths):
        files = sorted(path.glob("*.key")) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"no *.key files in {path}")
        keys.update(_load(file, need_secret=False)[0] for file in files)
    return frozenset(keys)


@dataclass(frozen=True)
class CurveServerKeys:
    """The server's key pair and the public keys (Z85) of the clients it lets in."""

    public_key: bytes
    secret_key: bytes
    allowed_clients: frozenset[bytes]

    def __post_init__(self) -> None:
        if not self.allowed_clients:
            raise ValueError("a CURVE server needs at least one allowed client key")

    @classmethod
    def from_files(cls, secret_file: str | Path, allowed: list[str | Path]) -> CurveServerKeys:
        public, secret = _load(secret_file, need_secret=True)
        return cls(public, secret, load_public_keys(allowed))


@dataclass(frozen=True)
class CurveClientKeys:
    """The server's public key (to check whom we talk to) and the client's own key pair (Z85)."""

    server_public_key: bytes
    public_key: bytes
    secret_key: bytes

    @classmethod
    def from_files(cls, server_public_file: str | Path, secret_file: str | Path) -> CurveClientKeys:
        public, secret = _load(secret_file, need_secret=True)
        return cls(_load(server_public_file, need_secret=False)[0], public, secret)


class _AllowList:
    """ZAP credentials provider: admits listed keys and counts the refusals."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed
        self.rejected = 0
        self._lock = threading.Lock()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        with self._lock:
            self.rejected += 1
        log.warning("refused a CURVE client with unknown public key %s", key.decode(errors="replace"))
        return False


class CurveGuard:
    """Runs the ZAP authenticator of one server's context and configures its socket."""

    def __init__(self, context: zmq.Context, keys: CurveServerKeys) -> None:
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq was built without CURVE support")
        self.keys = keys
        self._allow = _AllowList(keys.allowed_clients)
        self._authenticator = ThreadAuthenticator(context)
        self._authenticator.start()
        self._authenticator.configure_curve_callback(domain="*", credentials_provider=self._allow)

    @property
    def rejected(self) -> int:
        return self._allow.rejected

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.keys.secret_key
        socket.curve_publickey = self.keys.public_key
        socket.curve_server = True

    def stop(self) -> None:
        self._authenticator.stop()


def apply_client_keys(socket: zmq.Socket, keys: CurveClientKeys) -> None:
    socket.curve_serverkey = keys.server_public_key
    socket.curve_publickey = keys.public_key
    socket.curve_secretkey = keys.secret_key


def is_local_endpoint(address: str) -> bool:
    """Whether only this machine can reach ``address`` (ipc, inproc, or tcp on a loopback interface)."""
    transport, _, rest = address.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an interface name or '*': may face the network
        return False
