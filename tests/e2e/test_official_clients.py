"""Official runtime interface clients work unmodified against the Runtime API: the Rust
`lambda_runtime` crate (tests/functions/rust-function) and Python's `awslambdaric`."""

from __future__ import annotations

import base64
import json
import re

import pytest

from helpers import ACCOUNT, REGION, UUID_RE, awslambdaric_zip, rust_zip


@pytest.fixture(scope="module")
def ric_function(server):
    return server.create_function("awslambdaric", "provided.al2023", awslambdaric_zip(),
                                  handler="app.handler", MemorySize=256, Timeout=10)


@pytest.fixture(scope="module")
def rust_function(server):
    return server.create_function("lambda-runtime", "provided.al2023", rust_zip(),
                                  MemorySize=256, Timeout=10)


@pytest.fixture(params=["awslambdaric", "lambda_runtime"])
def official(request, ric_function, rust_function):
    return ric_function if request.param == "awslambdaric" else rust_function


def test_official_client_round_trip_and_context(server, official):
    cc = {"custom": {"k": "v"}, "env": {"e": "1"},
          "client": {"installation_id": "i", "app_title": "t", "app_version_name": "1",
                     "app_version_code": "1", "app_package_name": "p"}}
    inv = server.invoke(official, {"echo": {"a": [1, 2]}},
                        ClientContext=base64.b64encode(json.dumps(cc).encode()).decode())
    assert inv.function_error is None, inv.payload
    body = inv.json()
    assert body["echo"] == {"a": [1, 2]}
    assert re.fullmatch(UUID_RE, body["request_id"])
    assert body["function_name"] == official
    assert body["invoked_function_arn"] == \
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{official}"
    assert int(body["memory_limit_in_mb"]) == 256
    assert 8000 < body["remaining_time_ms"] <= 10000
    assert body["client_context"]["custom"] == {"k": "v"}


def test_official_client_error(server, official):
    inv = server.invoke(official, {"error": "official failure"})
    assert inv.function_error == "Unhandled"
    err = inv.json()
    assert err["errorMessage"] == "official failure"
    assert err["errorType"] == "TestError"


def test_official_client_many_sequential_invokes(server, official):
    counts = [server.invoke(official, {"echo": i}).json()["count"] for i in range(20)]
    assert counts == list(range(counts[0], counts[0] + 20)), "one warm environment"


def test_official_client_crash_then_recovers(server, official):
    inv = server.invoke(official, {"exit": 4})
    assert inv.json()["errorType"] == "Runtime.ExitError"
    assert server.invoke(official, {"echo": 1}).function_error is None
