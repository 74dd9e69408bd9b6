"""The committed gRPC stubs must be what generate_stubs.py makes from proto/."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import pytest

CLIENT_ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location(
        "privledger_generate_stubs", CLIENT_ROOT / "generate_stubs.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stubs_match_proto(tmp_path):
    gen = _generator()
    fresh = gen.generate(tmp_path)
    committed = gen.generated_files(CLIENT_ROOT)
    assert fresh, "the generator produced nothing"
    assert fresh == committed, (
        "generated file set differs from the committed one; run "
        "`python clients/python/generate_stubs.py` and commit the result"
    )
    problems = []
    for rel in fresh:
        new = (tmp_path / rel).read_text()
        old = (CLIENT_ROOT / rel).read_text()
        if new != old:
            lines = difflib.unified_diff(
                old.splitlines(), new.splitlines(),
                f"committed/{rel}", f"generated/{rel}", lineterm="",
            )
            # The serialized descriptor is one very long line: clip every line.
            diff = "\n".join(
                (l[:160] + " ...") if len(l) > 160 else l for l in list(lines)[:30]
            )
            problems.append(diff)
    if problems:
        pytest.fail(
            "gRPC stubs are stale: run `python clients/python/generate_stubs.py` and "
            "commit the result\n" + "\n".join(problems),
            pytrace=False,
        )


def test_stubs_import_from_package():
    from privledger_jupyterhub._proto.privledger.v1 import privledger_pb2, privledger_pb2_grpc

    assert privledger_pb2.DESCRIPTOR.name == "privledger/v1/privledger.proto"
    assert hasattr(privledger_pb2_grpc, "AuthorizerStub")
    d = privledger_pb2.Decision(decision_id="1")
    assert type(d).__module__ == "privledger_jupyterhub._proto.privledger.v1.privledger_pb2"
