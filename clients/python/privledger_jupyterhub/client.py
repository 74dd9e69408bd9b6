"""A thin asyncio client for the privledger Authorizer service."""

from __future__ import annotations

import asyncio
import os
import uuid
import weakref
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


class ChannelCache:
    """One channel reused across calls (a spawn does not pay for a new connection and
    TLS handshake), replaced when the CA, certificate or key file changes on disk (so
    replacing them in place still takes effect at the next call) or when the calling
    event loop is another one (a grpc.aio channel belongs to the loop that made it)."""

    def __init__(
        self,
        target: Target,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.target = target
        self.files = (ca_file, cert_file, key_file)
        self.created = 0
        self._channel: grpc.aio.Channel | None = None
        self._loop: weakref.ref | None = None
        self._stamp: tuple | None = None

    def _files_stamp(self) -> tuple:
        stamp = []
        for f in self.files:
            if f is None:
                stamp.append(None)
                continue
            try:
                st = os.stat(f)
                stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                stamp.append(("missing",))  # the channel's own read will say why
        return tuple(stamp)

    def get(self) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        stamp = self._files_stamp()
        same_loop = self._loop is not None and self._loop() is loop
        if self._channel is not None and same_loop and stamp == self._stamp:
            return self._channel
        old = self._channel if same_loop else None
        self._channel = self.target.channel(*self.files)
        self._loop = weakref.ref(loop)
        self._stamp = stamp
        self.created += 1
        if old is not None:
            # Calls in flight on the old channel may finish.
            loop.create_task(old.close(grace=30))
        return self._channel


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
    channels: ChannelCache | None = None,
) -> pb.Decision:
    """Asks privledger for (and has it record) a spawn decision.

    ``channels`` reuses one channel across calls; without it a channel is made for
    this call and closed after it.

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
    md = (("authorization", f"Bearer {token}"),)
    if channels is not None:
        stub = pb_grpc.AuthorizerStub(channels.get())
        return await stub.AuthorizeSpawn(req, metadata=md, timeout=timeout)
    async with target.channel(ca_file, cert_file, key_file) as channel:
        stub = pb_grpc.AuthorizerStub(channel)
        return await stub.AuthorizeSpawn(req, metadata=md, timeout=timeout)
