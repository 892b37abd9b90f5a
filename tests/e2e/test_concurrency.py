"""The account concurrency limit (429 beyond it) and keep-alive reaping of idle environments."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from helpers import REPORT_RE, function_processes, report_line_for, wait_until


# Platform behaviour is tested with the official Rust client (tests/functions/rust-function),
# so it does not depend on the managed-runtime bootstraps.
PLATFORM_RUNTIME = "provided.al2023"


@pytest.fixture(scope="module")
def limited(make_module_server):
    return make_module_server(extra_args=("--concurrency-limit", "2"))


def parallel(server, name, payloads):
    clients = [server.client("lambda") for _ in payloads]

    def call(args):
        client, payload = args
        try:
            return server.invoke(name, payload, client=client)
        except ClientError as exc:
            return exc

    with ThreadPoolExecutor(len(payloads)) as pool:
        return list(pool.map(call, zip(clients, payloads)))


def test_invocations_beyond_the_concurrency_limit_get_429(limited):
    name = limited.create_function("limit", PLATFORM_RUNTIME, Timeout=10)
    results = parallel(limited, name, [{"sleep_ms": 2000}] * 3)
    throttled = [r for r in results if isinstance(r, ClientError)]
    ok = [r for r in results if not isinstance(r, ClientError)]
    assert len(throttled) == 1, results
    assert len(ok) == 2
    exc = throttled[0]
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert exc.response["Error"]["Code"] == "TooManyRequestsException"
    assert exc.response.get("Reason") == "ConcurrentInvocationLimitExceeded", exc.response
    for r in ok:
        assert r.function_error is None and r.json()["slept_ms"] == 2000


def test_429_has_the_aws_error_shape(limited):
    name = limited.create_function("limitraw", PLATFORM_RUNTIME, Timeout=10)
    holders = [limited.client("lambda") for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(limited.invoke, name, {"sleep_ms": 1500}, c) for c in holders]
        # wait until both slots are taken (both environments are running the sleeper)
        wait_until(lambda: len(function_processes(name)) >= 2, timeout=10,
                   message="two running environments")
        resp = limited.raw("POST", f"/2015-03-31/functions/{name}/invocations", b"{}")
        for f in futures:
            f.result()
    assert resp.status == 429, resp.body
    assert resp.error_type.split(":")[0] == "TooManyRequestsException"
    body = resp.json()
    assert body["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert body.get("message") or body.get("Message")


def test_concurrency_slots_are_released_after_errors_timeouts_and_crashes(limited):
    name = limited.create_function("release", PLATFORM_RUNTIME, Timeout=1)
    assert limited.invoke(name, {"error": "x"}).function_error == "Unhandled"
    assert limited.invoke(name, {"sleep_ms": 3000}).function_error == "Unhandled"  # timeout
    assert limited.invoke(name, {"exit": 2}).function_error == "Unhandled"  # crash
    for _ in range(2):
        results = parallel(limited, name, [{"sleep_ms": 300}] * 2)
        assert all(not isinstance(r, ClientError) and r.function_error is None
                   for r in results), results


def test_event_invocations_are_not_rejected_by_the_limit(limited):
    name = limited.create_function("limitevent", PLATFORM_RUNTIME, Timeout=10)
    markers = [f"queued-{i}-{time.time_ns()}" for i in range(4)]
    for m in markers:
        inv = limited.invoke(name, {"print": m}, InvocationType="Event")
        assert inv.status == 202
    limited.wait_log(name, lambda msgs: all(any(m in x for x in msgs) for m in markers),
                     timeout=30)


def test_account_settings_report_the_configured_limit(limited):
    limit = limited.lam.get_account_settings()["AccountLimit"]
    assert limit["ConcurrentExecutions"] == 2
    assert limit["UnreservedConcurrentExecutions"] == 2


@pytest.fixture(scope="module")
def short_keep_alive(make_module_server):
    return make_module_server(extra_args=("--keep-alive-secs", "1"))


@pytest.mark.parametrize("runtime", ["python3.11", "nodejs20.x", "provided.al2023"])
def test_idle_environments_are_reaped_after_the_keep_alive(short_keep_alive, runtime):
    s = short_keep_alive
    name = s.create_function("reap", runtime)
    payload = {"echo": 1} if runtime == "provided.al2023" else {"spawn_sleep_ms": 0}
    first = s.invoke(name, payload)
    assert first.function_error is None, first.payload
    running = function_processes(name)
    assert running, "the environment runs after an invoke"
    if runtime != "provided.al2023":
        assert len(running) >= 2, "the function's child process runs too"
    wait_until(lambda: not function_processes(name), timeout=15, interval=0.1,
               message=f"the idle environment of {name} (and its children) to be reaped")

    inv = s.invoke(name, {"echo": 2}, LogType="Tail")
    assert inv.function_error is None
    rid = re.search(r"START RequestId: (\S+)", inv.log_tail).group(1)
    report = REPORT_RE.match(report_line_for(inv.log_tail.splitlines(), rid) or "")
    assert report and report["init"] is not None, "a reaped environment means a cold start"


def test_environment_is_reused_within_the_keep_alive(short_keep_alive):
    s = short_keep_alive
    name = s.create_function("keep", PLATFORM_RUNTIME)
    streams = {s.invoke(name, {"echo": i}).json()["log_stream_name"] for i in range(3)}
    assert len(streams) == 1
