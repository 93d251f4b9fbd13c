"""CURVE encryption and client authentication, and the loopback-only rule for servers without keys.

Key files are ZeroMQ certificates (``zmq.auth.create_certificates``): ``NAME.key`` holds the public key,
``NAME.key_secret`` both keys. A server knows its own secret file and the public keys of the clients it
admits; a client knows the server's public key and its own secret file.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger(__name__)


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (keep private) into ``directory``."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


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
    return public, secret


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
