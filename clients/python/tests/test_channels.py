"""The hook's channel cache: one channel per event loop, a new one when a TLS file
changes on disk."""

from __future__ import annotations

import asyncio
import os

from privledger_jupyterhub.client import ChannelCache, Target


def test_a_rotated_ca_file_gets_a_new_channel_and_the_same_file_does_not(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    cache = ChannelCache(Target.parse("https://127.0.0.1:1"), ca_file=str(ca))

    async def twice():
        a = cache.get()
        b = cache.get()
        return a, b

    a, b = asyncio.run(twice())
    assert a is b and cache.created == 1

    async def rotated():
        first = cache.get()
        st = os.stat(ca)
        ca.write_text(ca.read_text() + "\n")  # a new file in place
        os.utime(ca, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        second = cache.get()
        return first, second

    first, second = asyncio.run(rotated())
    # Another loop: a new channel; then the rotation: another one.
    assert first is not a and second is not first
    assert cache.created == 3
