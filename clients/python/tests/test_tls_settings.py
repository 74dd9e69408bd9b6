"""The client certificate settings (cert_file, key_file): validation and plumbing.
No server needed."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from privledger_jupyterhub import Target, authorize_spawn, make_pre_spawn_hook, resolve_settings

ENV = (
    "PRIVLEDGER_SERVER", "PRIVLEDGER_TOKEN", "PRIVLEDGER_TOKEN_FILE", "PRIVLEDGER_CA_FILE",
    "PRIVLEDGER_CLIENT_CERT_FILE", "PRIVLEDGER_CLIENT_KEY_FILE",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("PRIVLEDGER_TOKEN", "plg_test")


@pytest.fixture
def pem(tmp_path):
    cert = tmp_path / "hub.pem"
    key = tmp_path / "hub.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\ncert\n-----END CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n")
    return str(cert), str(key)


HTTPS = "https://ledger.example:50051"


def test_cert_and_key_with_https(pem):
    cert, key = pem
    s = resolve_settings(server=HTTPS, cert_file=cert, key_file=key)
    assert (s.cert_file, s.key_file) == (cert, key)
    assert s.target.tls


def test_neither_is_the_default():
    s = resolve_settings(server=HTTPS)
    assert s.cert_file is None and s.key_file is None


def test_from_environment(pem, monkeypatch):
    cert, key = pem
    monkeypatch.setenv("PRIVLEDGER_SERVER", HTTPS)
    monkeypatch.setenv("PRIVLEDGER_CLIENT_CERT_FILE", cert)
    monkeypatch.setenv("PRIVLEDGER_CLIENT_KEY_FILE", key)
    hook = make_pre_spawn_hook()
    assert (hook.settings.cert_file, hook.settings.key_file) == (cert, key)


def test_arguments_beat_environment(pem, tmp_path, monkeypatch):
    cert, key = pem
    monkeypatch.setenv("PRIVLEDGER_CLIENT_CERT_FILE", "/nonexistent/cert.pem")
    monkeypatch.setenv("PRIVLEDGER_CLIENT_KEY_FILE", "/nonexistent/key.pem")
    s = resolve_settings(server=HTTPS, cert_file=tmp_path / "hub.pem", key_file=key)
    assert (s.cert_file, s.key_file) == (cert, key)


@pytest.mark.parametrize("which", ["cert_file", "key_file"])
def test_only_one_of_cert_and_key(pem, which):
    cert, key = pem
    kwargs = {"cert_file": cert} if which == "cert_file" else {"key_file": key}
    other = "key_file" if which == "cert_file" else "cert_file"
    with pytest.raises(ValueError, match=f"{which} is set but {other} is not") as exc:
        make_pre_spawn_hook(server=HTTPS, **kwargs)
    assert str(exc.value).startswith("privledger: ")
    assert "PRIVLEDGER_CLIENT_CERT_FILE" in str(exc.value)


@pytest.mark.parametrize("var", ["PRIVLEDGER_CLIENT_CERT_FILE", "PRIVLEDGER_CLIENT_KEY_FILE"])
def test_only_one_of_cert_and_key_from_environment(pem, monkeypatch, var):
    monkeypatch.setenv(var, pem[0] if var.endswith("CERT_FILE") else pem[1])
    with pytest.raises(ValueError, match="is set but"):
        make_pre_spawn_hook(server=HTTPS)


@pytest.mark.parametrize(
    "server",
    ["http://127.0.0.1:50051", "127.0.0.1:50051", "unix:/run/privledger.sock",
     "unix:///run/privledger.sock", "/run/privledger.sock"],
)
@pytest.mark.parametrize("given", ["both", "cert_file", "key_file"])
def test_client_cert_needs_https(pem, server, given):
    cert, key = pem
    kwargs = {"both": {"cert_file": cert, "key_file": key},
              "cert_file": {"cert_file": cert}, "key_file": {"key_file": key}}[given]
    match = "needs an https:// server address" if given == "both" else "is set but"
    with pytest.raises(ValueError, match=match) as exc:
        make_pre_spawn_hook(server=server, **kwargs)
    if given == "both":
        assert repr(server) in str(exc.value)


def test_client_cert_with_https_from_environment_and_http_argument(pem, monkeypatch):
    """The server argument wins, and the certificate from the environment does not fit."""
    cert, key = pem
    monkeypatch.setenv("PRIVLEDGER_SERVER", HTTPS)
    monkeypatch.setenv("PRIVLEDGER_CLIENT_CERT_FILE", cert)
    monkeypatch.setenv("PRIVLEDGER_CLIENT_KEY_FILE", key)
    with pytest.raises(ValueError, match="needs an https://"):
        make_pre_spawn_hook(server="http://127.0.0.1:50051")


@pytest.mark.parametrize("which", ["cert_file", "key_file"])
def test_unreadable_or_empty_file_fails_at_startup(pem, tmp_path, which):
    cert, key = pem
    what = "client certificate" if which == "cert_file" else "client key"
    kwargs = {"cert_file": cert, "key_file": key, which: str(tmp_path / "missing.pem")}
    with pytest.raises(ValueError, match=f"cannot read the {what} file"):
        make_pre_spawn_hook(server=HTTPS, **kwargs)
    empty = tmp_path / "empty.pem"
    empty.write_text("\n")
    kwargs[which] = str(empty)
    with pytest.raises(ValueError, match=f"the {what} file .* is empty"):
        make_pre_spawn_hook(server=HTTPS, **kwargs)


def test_channel_passes_cert_and_key_to_grpc(pem, tmp_path, monkeypatch):
    cert, key = pem
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    seen = {}

    def fake_creds(**kwargs):
        seen.update(kwargs)
        return grpc.local_channel_credentials()

    async def open_and_close(*files):
        ch = Target.parse(HTTPS).channel(*files)
        await ch.close()

    monkeypatch.setattr(grpc, "ssl_channel_credentials", fake_creds)
    asyncio.run(open_and_close(str(ca), cert, key))
    assert seen == {
        "root_certificates": b"CA",
        "private_key": open(key, "rb").read(),
        "certificate_chain": open(cert, "rb").read(),
    }

    seen.clear()
    asyncio.run(open_and_close())
    assert seen == {"root_certificates": None, "private_key": None, "certificate_chain": None}


@pytest.mark.parametrize(
    "server, kwargs, match",
    [
        ("http://127.0.0.1:1", {"cert_file": "c", "key_file": "k"}, "needs an https://"),
        ("https://127.0.0.1:1", {"cert_file": "c"}, "cert_file is set but key_file is not"),
        ("https://127.0.0.1:1", {"key_file": "k"}, "key_file is set but cert_file is not"),
    ],
)
def test_authorize_spawn_checks_too(server, kwargs, match):
    """The public client function refuses a bad combination before any network I/O."""
    with pytest.raises(ValueError, match=match):
        asyncio.run(authorize_spawn(Target.parse(server), "t", user="u", **kwargs))
