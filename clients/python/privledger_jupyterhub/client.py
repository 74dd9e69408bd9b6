"""A thin asyncio client for the privledger Authorizer service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import grpc
import grpc.aio

from ._proto.privledger.v1 import privledger_pb2 as pb
from ._proto.privledger.v1 import privledger_pb2_grpc as pb_grpc

#: The privledger CLI's default server address.
DEFAULT_SERVER = "http://127.0.0.1:50051"


@dataclass(frozen=True)
class Target:
    """Where and how to connect: a gRPC target string and whether to use TLS."""

    target: str
    tls: bool
    display: str

    @classmethod
    def parse(cls, server: str) -> "Target":
        """Accepts what the privledger CLI's ``--server`` accepts, and more.

        ``http://HOST:PORT`` (plaintext), ``https://HOST[:PORT]`` (TLS),
        ``unix:/path`` or ``unix:///path`` or a bare ``/path`` (a Unix socket),
        or a bare ``HOST:PORT`` (plaintext).
        """
        s = server.strip()
        if not s:
            raise ValueError("privledger: the server address is empty")
        if s.startswith("/"):
            return cls(f"unix:{s}", False, s)
        if s.startswith("unix:"):
            return cls(s, False, s)
        if "://" in s:
            u = urlsplit(s)
            if u.scheme not in ("http", "https"):
                raise ValueError(
                    f"privledger: unsupported server address {server!r} "
                    "(use http://HOST:PORT, https://HOST:PORT or unix:/PATH)"
                )
            if not u.hostname:
                raise ValueError(f"privledger: no host in server address {server!r}")
            port = u.port or (443 if u.scheme == "https" else 80)
            host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
            return cls(f"{host}:{port}", u.scheme == "https", s)
        return cls(s, False, s)

    def check_client_cert(self, cert_file: str | None, key_file: str | None) -> None:
        """Raises ValueError unless the client certificate settings fit this target:
        both cert_file and key_file or neither, and both only with ``https://``."""
        if cert_file is None and key_file is None:
            return
        if cert_file is None or key_file is None:
            given, missing = (
                ("cert_file", "key_file") if key_file is None else ("key_file", "cert_file")
            )
            raise ValueError(
                f"privledger: {given} is set but {missing} is not; a client certificate "
                "for mutual TLS needs both its certificate chain (cert_file) and its "
                "private key (key_file)"
            )
        if not self.tls:
            raise ValueError(
                "privledger: a client certificate (cert_file/key_file) needs an https:// "
                f"server address, not {self.display!r}"
            )

    def channel(
        self,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> grpc.aio.Channel:
        """A new channel. The CA, certificate and key files are read on every call,
        so replacing them on disk takes effect at the next call."""
        self.check_client_cert(cert_file, key_file)
        if self.tls:
            roots = Path(ca_file).read_bytes() if ca_file else None
            key = Path(key_file).read_bytes() if key_file else None
            chain = Path(cert_file).read_bytes() if cert_file else None
            creds = grpc.ssl_channel_credentials(
                root_certificates=roots, private_key=key, certificate_chain=chain
            )
            return grpc.aio.secure_channel(self.target, creds)
        return grpc.aio.insecure_channel(self.target)


def token_from_file(path: str | Path) -> Callable[[], str]:
    """A token provider that rereads ``path`` on every call (rotation friendly)."""
    p = Path(path).expanduser()

    def read() -> str:
        secret = p.read_text().strip()
        if not secret:
            raise ValueError(f"privledger: token file {p} is empty")
        return secret

    read.__doc__ = f"token from {p}"
    return read


def new_request_id() -> str:
    return f"jupyterhub-{uuid.uuid4()}"


async def authorize_spawn(
    target: Target,
    token: str,
    *,
    user: str,
    server_name: str = "",
    image: str = "",
    request_id: str | None = None,
    timeout: float = 5.0,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> pb.Decision:
    """Asks privledger for (and has it record) a spawn decision.

    ``ca_file`` verifies an ``https://`` server (default: the system roots);
    ``cert_file`` and ``key_file`` (PEM, both or neither, ``https://`` only) are
    the client certificate for a server that requires mutual TLS.

    Raises ``grpc.aio.AioRpcError`` when the server cannot be reached or refuses
    the call (a failed TLS handshake is ``UNAVAILABLE``), ``ValueError`` when the
    client certificate settings do not fit the target. A denial is a ``Decision``
    with ``allowed = False``, not an error.
    """
    req = pb.AuthorizeSpawnRequest(
        user=user,
        server_name=server_name or "",
        image=image or "",
        request_id=request_id or new_request_id(),
    )
    async with target.channel(ca_file, cert_file, key_file) as channel:
        stub = pb_grpc.AuthorizerStub(channel)
        return await stub.AuthorizeSpawn(
            req,
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=timeout,
        )
