"""Invoke: payloads, invocation types, log tails, function errors, timeouts, crashes, init
errors, concurrency of environments, warm reuse, the context object and the environment."""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from helpers import (
    ACCOUNT, LOG_STREAM_RE, REGION, SERVER_SECRET_ENV, UUID_RE, error_code, error_status,
    function_processes, node_zip, python_zip, wait_until, zip_files,
)

ROUND_TRIP = {
    "nested": [1, "two", {"three": 3.5, "four": None, "five": True}],
    "unicode": "héllo wörld ☃ \u2028 🚀",
    "escaped": "quote \" backslash \\ newline \n tab \t",
    "big_int": 9007199254740991,
}


def arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def b64_json(obj) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


# --------------------------------------------------------------------------------------
# invocation types and headers


def test_request_response_round_trips_the_payload(server, basic_functions, runtime):
    name = basic_functions(runtime)
    inv = server.invoke(name, {"echo": ROUND_TRIP})
    assert inv.status == 200
    assert inv.function_error is None, inv.payload
    assert inv.json()["echo"] == ROUND_TRIP
    assert inv.response["ExecutedVersion"] == "$LATEST"
    assert inv.headers.get("x-amz-executed-version") == "$LATEST"


def test_request_response_returns_non_object_results(server, basic_functions, runtime):
    name = basic_functions(runtime)
    for value in ([1, 2, 3], "just a string", 42, None):
        inv = server.invoke(name, json.dumps(value))
        assert inv.function_error is None, inv.payload
        assert json.loads(inv.payload) == value


def test_invoke_with_aws_cli_writes_the_payload_to_the_outfile(server, basic_functions,
                                                               runtime, tmp_path):
    name = basic_functions(runtime)
    out = tmp_path / "out.json"
    rc, stdout, err = server.aws(
        "lambda", "invoke", "--function-name", name,
        "--payload", json.dumps({"echo": ROUND_TRIP}), str(out),
    )
    assert rc == 0, err
    meta = json.loads(stdout)
    assert meta["StatusCode"] == 200
    assert meta["ExecutedVersion"] == "$LATEST"
    assert json.loads(out.read_text())["echo"] == ROUND_TRIP


def test_request_id_header_is_the_invocation_request_id(server, basic_functions):
    name = basic_functions("python3.11")
    inv = server.invoke(name, {"echo": 1})
    assert inv.headers["x-amzn-requestid"] == inv.json()["request_id"]
    assert re.fullmatch(UUID_RE, inv.json()["request_id"])


def test_event_invocation_returns_202_and_runs_the_function(server, basic_functions, runtime):
    name = basic_functions(runtime)
    marker = f"event-marker-{time.time_ns()}"
    inv = server.invoke(name, {"print": marker}, InvocationType="Event")
    assert inv.status == 202
    assert inv.payload == b""
    server.wait_log(name, lambda msgs: any(marker in m for m in msgs), timeout=20)


def test_event_invocation_with_aws_cli(server, basic_functions, tmp_path):
    name = basic_functions("python3.11")
    marker = f"cli-event-marker-{time.time_ns()}"
    rc, stdout, err = server.aws(
        "lambda", "invoke", "--function-name", name, "--invocation-type", "Event",
        "--payload", json.dumps({"print": marker}), str(tmp_path / "out"),
    )
    assert rc == 0, err
    assert json.loads(stdout)["StatusCode"] == 202
    server.wait_log(name, lambda msgs: any(marker in m for m in msgs), timeout=20)


def test_dry_run_returns_204_and_does_not_run_the_function(server):
    name = server.create_function("dryrun", "python3.11")
    inv = server.invoke(name, {"print": "dry-run-must-not-print"}, InvocationType="DryRun")
    assert inv.status == 204
    assert inv.payload == b""
    tail = server.invoke(name, {"print": "real-run"}, LogType="Tail").log_tail
    assert "real-run" in tail
    msgs = server.wait_log(name, lambda ms: any(m.startswith("REPORT") for m in ms))
    assert sum(m.startswith("START") for m in msgs) == 1, msgs
    assert not any("dry-run-must-not-print" in m for m in msgs)


def test_dry_run_of_an_unknown_function_is_404(server):
    with pytest.raises(ClientError) as exc:
        server.invoke(server.name("nope"), {}, InvocationType="DryRun")
    assert error_status(exc.value) == 404
    assert error_code(exc.value) == "ResourceNotFoundException"


def test_log_type_tail_returns_the_invocation_log(server, basic_functions, runtime):
    name = basic_functions(runtime)
    marker = f"tail-marker-{time.time_ns()}"
    inv = server.invoke(name, {"print": marker}, LogType="Tail")
    assert inv.function_error is None, inv.payload
    tail = inv.log_tail
    start = re.search(r"START RequestId: (" + UUID_RE + r") Version: \$LATEST", tail)
    assert start, tail
    rid = start.group(1)
    assert f"END RequestId: {rid}" in tail
    assert f"REPORT RequestId: {rid}" in tail
    assert marker in tail
    assert tail.index("START") < tail.index(marker) < tail.index("END") < tail.index("REPORT")


def test_log_tail_is_the_last_4_kb(server, basic_functions):
    name = basic_functions("python3.11")
    lines = [f"line {i:04d} " + "x" * 40 for i in range(200)]  # ~10 KB
    inv = server.invoke(name, {"print": lines}, LogType="Tail")
    raw = base64.b64decode(inv.response["LogResult"])
    assert 3000 < len(raw) <= 4096
    text = raw.decode(errors="replace")
    assert "REPORT RequestId:" in text
    assert text.rstrip("\n").splitlines()[-1].startswith("REPORT RequestId:")
    assert lines[-1] in text
    assert lines[0] not in text


def test_log_tail_with_aws_cli(server, basic_functions, tmp_path):
    name = basic_functions("nodejs20.x")
    rc, stdout, err = server.aws(
        "lambda", "invoke", "--function-name", name, "--log-type", "Tail",
        "--payload", json.dumps({"print": "cli-tail-line"}), str(tmp_path / "out"),
    )
    assert rc == 0, err
    tail = base64.b64decode(json.loads(stdout)["LogResult"]).decode()
    assert "cli-tail-line" in tail and "REPORT RequestId:" in tail


def test_no_log_result_without_tail(server, basic_functions):
    inv = server.invoke(basic_functions("python3.11"), {"echo": 1})
    assert "LogResult" not in inv.response


def test_invoke_by_arn_and_latest_qualifier(server, basic_functions):
    name = basic_functions("python3.11")
    for kw in ({"FunctionName": arn(name)}, {"FunctionName": name, "Qualifier": "$LATEST"}):
        resp = server.lam.invoke(Payload=json.dumps({"echo": "q"}), **kw)
        assert resp["StatusCode"] == 200
        assert resp["ExecutedVersion"] == "$LATEST"
        assert json.loads(resp["Payload"].read())["echo"] == "q"


# --------------------------------------------------------------------------------------
# function errors


def test_invoke_returns_function_error_as_200_with_unhandled_header(server, basic_functions,
                                                                     runtime):
    name = basic_functions(runtime)
    inv = server.invoke(name, {"error": "something broke"})
    assert inv.status == 200
    assert inv.function_error == "Unhandled"
    assert inv.headers.get("x-amz-function-error") == "Unhandled"
    assert inv.response["ExecutedVersion"] == "$LATEST"
    err = inv.json()
    assert err["errorMessage"] == "something broke"
    assert err["errorType"] == "TestError"
    # the stack as Lambda's runtimes send it: Python `stackTrace`, Node.js `trace` (lines);
    # the Rust lambda_runtime sends none
    if runtime == "python3.11":
        assert isinstance(err.get("stackTrace"), list) and err["stackTrace"], err
        assert any("app.py" in frame for frame in err["stackTrace"]), err
    elif runtime == "nodejs20.x":
        assert isinstance(err.get("trace"), list) and err["trace"], err
        assert err["trace"][0] == "TestError: something broke", err
    # the environment survives a handled error
    ok = server.invoke(name, {"echo": "after"})
    assert ok.function_error is None and ok.json()["echo"] == "after"


def test_function_error_with_aws_cli(server, basic_functions, tmp_path):
    name = basic_functions("python3.11")
    out = tmp_path / "out.json"
    rc, stdout, err = server.aws(
        "lambda", "invoke", "--function-name", name, "--payload", '{"error": "cli boom"}',
        str(out),
    )
    assert rc == 0, err
    meta = json.loads(stdout)
    assert meta["StatusCode"] == 200
    assert meta["FunctionError"] == "Unhandled"
    body = json.loads(out.read_text())
    assert body["errorMessage"] == "cli boom" and body["errorType"] == "TestError"


def test_function_error_has_tail_log(server, basic_functions):
    name = basic_functions("python3.11")
    inv = server.invoke(name, {"error": "tail boom"}, LogType="Tail")
    assert inv.function_error == "Unhandled"
    assert "REPORT RequestId:" in inv.log_tail
    assert "tail boom" in inv.log_tail, "the runtime logs the error"


# --------------------------------------------------------------------------------------
# handler styles


def test_node_callback_handler(server):
    name = server.create_function("nodecb", "nodejs20.x", node_zip(), handler="index.callback")
    inv = server.invoke(name, {"a": 1})
    assert inv.function_error is None, inv.payload
    body = inv.json()
    assert body["style"] == "callback" and body["input"] == {"a": 1}
    assert re.fullmatch(UUID_RE, body["request_id"])


def test_node_callback_error(server):
    name = server.create_function("nodecberr", "nodejs20.x", node_zip(),
                                  handler="index.callbackError")
    inv = server.invoke(name, {})
    assert inv.function_error == "Unhandled"
    assert inv.json()["errorMessage"] == "callback failure"
    assert inv.json()["errorType"] == "TestError"


def test_node_nested_handler_property_path(server):
    name = server.create_function("nodenest", "nodejs20.x", node_zip(),
                                  handler="index.nested.handler")
    assert server.invoke(name, {"b": 2}).json() == {"style": "nested", "input": {"b": 2}}


def test_node_es_module_handler(server):
    name = server.create_function("nodeesm", "nodejs20.x", node_zip("esm"))
    body = server.invoke(name, {"c": 3}).json()
    assert body == {"style": "esm", "input": {"c": 3}, "function_name": name}


def test_python_handler_in_a_package_path(server):
    name = server.create_function("pynest", "python3.11", python_zip("nested"),
                                  handler="pkg/mod.handler")
    assert server.invoke(name, {}).json() == {"module": "pkg.mod"}


@pytest.mark.parametrize("runtime,handler", [("python3.11", "app.hello"),
                                             ("nodejs20.x", "index.hello")])
def test_handler_returning_a_string(server, runtime, handler):
    zip_bytes = python_zip() if runtime.startswith("python") else node_zip()
    name = server.create_function("hello", runtime, zip_bytes, handler=handler)
    assert server.invoke(name, {"name": "Nimbus"}).json() == "Hello, Nimbus!"


# --------------------------------------------------------------------------------------
# client context


CLIENT_CONTEXT = {
    "client": {"installation_id": "inst-1", "app_title": "e2e", "app_version_name": "1.0",
               "app_version_code": "1", "app_package_name": "io.nimbus.e2e"},
    "custom": {"tenant": "acme", "trace": "abc"},
    "env": {"platform": "linux"},
}


def test_client_context_is_passed_to_the_function(server, basic_functions, runtime):
    name = basic_functions(runtime)
    inv = server.invoke(name, {"echo": 1}, ClientContext=b64_json(CLIENT_CONTEXT))
    assert inv.function_error is None, inv.payload
    cc = inv.json()["client_context"]
    assert cc is not None, "the function saw no client context"
    assert cc["custom"] == CLIENT_CONTEXT["custom"]
    if runtime != "provided.al2023":  # the Rust crate's struct has no `env`
        assert cc["env"] == CLIENT_CONTEXT["env"]
    # and it does not stick to the environment
    assert server.invoke(name, {"echo": 2}).json()["client_context"] is None


def test_client_context_with_aws_cli(server, basic_functions, tmp_path):
    name = basic_functions("nodejs20.x")
    out = tmp_path / "out.json"
    rc, stdout, err = server.aws(
        "lambda", "invoke", "--function-name", name, "--payload", '{"echo": 1}',
        "--client-context", b64_json(CLIENT_CONTEXT), str(out),
    )
    assert rc == 0, err
    assert json.loads(out.read_text())["client_context"]["custom"] == CLIENT_CONTEXT["custom"]


# --------------------------------------------------------------------------------------
# payload limits


def test_payload_over_6_mb_is_rejected_with_413(server, basic_functions):
    name = basic_functions("python3.11")
    payload = json.dumps({"echo": "x" * (6 * 1024 * 1024)})
    with pytest.raises(ClientError) as exc:
        server.lam.invoke(FunctionName=name, Payload=payload)
    assert error_status(exc.value) == 413
    assert error_code(exc.value) in ("RequestTooLargeException", "RequestEntityTooLargeException")


def test_payload_just_under_6_mb_round_trips(server, basic_functions):
    name = basic_functions("python3.11")
    big = "y" * (5 * 1024 * 1024)
    inv = server.invoke(name, {"echo": big})
    assert inv.function_error is None, inv.payload[:300]
    assert inv.json()["echo"] == big


def test_response_over_6_mb_is_a_function_error(server, basic_functions):
    name = basic_functions("python3.11")
    inv = server.invoke(name, {"response_mb": 7})
    assert inv.status == 200
    assert inv.function_error == "Unhandled"
    err = inv.json()
    assert err["errorType"] == "Function.ResponseSizeTooLarge", err
    ok = server.invoke(name, {"echo": "after-big-response"})
    assert ok.function_error is None and ok.json()["echo"] == "after-big-response"


# --------------------------------------------------------------------------------------
# timeouts, crashes, init errors


def test_timeout_returns_task_timed_out_and_the_next_invoke_works(server, runtime):
    name = server.create_function("timeout", runtime, Timeout=1)
    started = time.monotonic()
    inv = server.invoke(name, {"sleep_ms": 5000})
    elapsed = time.monotonic() - started
    assert inv.status == 200
    assert inv.function_error == "Unhandled"
    assert "Task timed out after 1.00 seconds" in inv.json()["errorMessage"], inv.payload
    assert 0.9 < elapsed < 4.0, elapsed

    ok = server.invoke(name, {"echo": "after-timeout"})
    assert ok.function_error is None, ok.payload
    assert ok.json()["echo"] == "after-timeout"


@pytest.mark.parametrize("runtime", ["python3.11", "nodejs20.x"])
def test_timeout_kills_the_whole_environment_including_children(server, runtime):
    name = server.create_function("tokill", runtime, Timeout=2)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(server.invoke, name, {"spawn_sleep_ms": 5000})
        wait_until(lambda: len(function_processes(name)) >= 2, timeout=10,
                   message="the function and the child it spawned to run")
        inv = future.result()
    assert inv.function_error == "Unhandled"
    assert "Task timed out" in inv.json()["errorMessage"]
    wait_until(lambda: not function_processes(name), timeout=10,
               message=f"every process of {name} to be killed after its timeout")


def test_crash_mid_invocation_is_runtime_exit_error(server, runtime):
    name = server.create_function("crash", runtime)
    assert server.invoke(name, {"echo": 1}).function_error is None
    inv = server.invoke(name, {"exit": 3})
    assert inv.status == 200
    assert inv.function_error == "Unhandled"
    err = inv.json()
    assert err["errorType"] == "Runtime.ExitError", err
    assert "exit status 3" in err["errorMessage"], err
    ok = server.invoke(name, {"echo": "after-crash"})
    assert ok.function_error is None, ok.payload
    assert ok.json()["echo"] == "after-crash"


INIT_ERRORS = [
    ("python3.11", "import_error", "app.handler", "Runtime.ImportModuleError"),
    ("python3.11", "syntax_error", "app.handler", "Runtime.UserCodeSyntaxError"),
    ("python3.11", "basic", "app.missing", "Runtime.HandlerNotFound"),
    ("python3.11", "basic", "nodot", "Runtime.MalformedHandlerName"),
    ("python3.11", "basic", "nomodule.handler", "Runtime.ImportModuleError"),
    ("nodejs20.x", "import_error", "index.handler", "Runtime.ImportModuleError"),
    ("nodejs20.x", "syntax_error", "index.handler", "Runtime.UserCodeSyntaxError"),
    ("nodejs20.x", "basic", "index.missing", "Runtime.HandlerNotFound"),
    ("nodejs20.x", "basic", "nomodule.handler", "Runtime.ImportModuleError"),
]


@pytest.mark.parametrize("runtime,fixture,handler,error_type", INIT_ERRORS,
                         ids=[f"{r}-{f}-{h}" for r, f, h, _ in INIT_ERRORS])
def test_init_error_is_returned_to_the_invoker_every_time(server, runtime, fixture, handler,
                                                          error_type):
    zip_bytes = python_zip(fixture) if runtime.startswith("python") else node_zip(fixture)
    name = server.create_function("initerr", runtime, zip_bytes, handler=handler)
    for attempt in range(2):
        started = time.monotonic()
        inv = server.invoke(name, {}, LogType="Tail")
        assert time.monotonic() - started < 10
        assert inv.status == 200
        assert inv.function_error == "Unhandled", (attempt, inv.payload)
        err = inv.json()
        assert err["errorType"] == error_type, (attempt, err)
        assert err["errorMessage"], err


@pytest.mark.parametrize("runtime", ["python3.11", "nodejs20.x"])
def test_failed_init_is_retried_by_the_next_invoke(server, runtime):
    zip_bytes = python_zip("init_flaky") if runtime.startswith("python") else node_zip("init_flaky")
    fail_until = time.time() + 3
    name = server.create_function("flaky", runtime, zip_bytes,
                                  Environment={"Variables": {"FAIL_UNTIL": str(fail_until)}})
    first = server.invoke(name, {})
    assert time.time() < fail_until, "test machine too slow: first invoke after the deadline"
    assert first.function_error == "Unhandled", first.payload
    assert "init not ready yet" in first.json()["errorMessage"]

    def succeeds():
        inv = server.invoke(name, {})
        return inv.function_error is None and inv.json() == {"ready": True}

    wait_until(succeeds, timeout=15, interval=0.2, message="init to succeed on a later invoke")
    assert time.time() >= fail_until


def test_init_within_10_s_does_not_count_against_the_function_timeout(server):
    name = server.create_function("initslow", "python3.11", python_zip("init_slow"), Timeout=2,
                                  Environment={"Variables": {"INIT_SLEEP": "3.5"}})
    inv = server.invoke(name, {}, LogType="Tail")
    assert inv.function_error is None, inv.payload
    assert inv.json()["init_seconds"] >= 3.5
    init = re.search(r"Init Duration: (\d+\.\d{2}) ms", inv.log_tail)
    assert init and float(init.group(1)) >= 3500, inv.log_tail


def test_init_is_capped_at_10_s(server):
    name = server.create_function("inithang", "python3.11", python_zip("init_slow"), Timeout=3,
                                  Environment={"Variables": {"INIT_SLEEP": "600"}})
    started = time.monotonic()
    inv = server.invoke(name, {})
    elapsed = time.monotonic() - started
    assert inv.function_error == "Unhandled", inv.payload
    assert inv.json().get("errorType"), inv.payload
    assert 9 < elapsed < 25, f"init was stopped after {elapsed:.1f} s, not about 10 s"
    wait_until(lambda: not function_processes(name), timeout=10,
               message="the hung init's environment to be killed")


def test_bootstrap_exiting_during_init_is_runtime_exit_error(server):
    bootstrap = "#!/bin/sh\necho 'bootstrap giving up'\nexit 7\n"
    name = server.create_function("initexit", "provided.al2023",
                                  zip_files({"bootstrap": (bootstrap, 0o755)}))
    for _ in range(2):
        started = time.monotonic()
        inv = server.invoke(name, {}, LogType="Tail")
        assert time.monotonic() - started < 10
        assert inv.function_error == "Unhandled", inv.payload
        err = inv.json()
        assert err["errorType"] == "Runtime.ExitError", err
        assert "exit status 7" in err["errorMessage"], err
    server.wait_log(name, lambda msgs: any("bootstrap giving up" in m for m in msgs))


def test_missing_or_unexecutable_bootstrap_is_runtime_invalid_entrypoint(server):
    """A provided function whose bootstrap is absent, or present but not executable, gets
    Lambda's answer: 200 with FunctionError and Runtime.InvalidEntrypoint — not a 500 (the
    jail used to report its failed exec as an internal error)."""
    missing = server.create_function("nobootstrap", "provided.al2023",
                                     zip_files({"readme.txt": ("no bootstrap here", 0o644)}))
    noexec = server.create_function("noexec", "provided.al2023",
                                    zip_files({"bootstrap": ("#!/bin/sh\nexit 0\n", 0o644)}))
    for name, words in ((missing, "Couldn't find valid bootstrap"),
                        (noexec, "permission denied")):
        for _ in range(2):
            inv = server.invoke(name, {})
            assert inv.status == 200, inv.payload
            assert inv.function_error == "Unhandled", inv.payload
            err = inv.json()
            assert err["errorType"] == "Runtime.InvalidEntrypoint", err
            assert words.lower() in err["errorMessage"].lower(), err
    # Nothing of the failed starts is left running below the server.
    wait_until(lambda: not function_processes(missing) and not function_processes(noexec),
               timeout=10, message="the failed environments to be gone")


# --------------------------------------------------------------------------------------
# execution environments


def test_ten_parallel_invokes_of_a_1s_sleeper_run_concurrently(server, runtime):
    name = server.create_function("par", runtime, Timeout=10)
    clients = [server.client("lambda") for _ in range(10)]

    def call(client):
        return server.invoke(name, {"sleep_ms": 1000}, client=client)

    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(call, clients))
    elapsed = time.monotonic() - started
    for inv in results:
        assert inv.function_error is None, inv.payload
        assert inv.json()["slept_ms"] == 1000
    streams = {inv.json()["log_stream_name"] for inv in results}
    assert len(streams) == 10, "one invocation at a time per environment"
    assert elapsed < 2.5, f"10 parallel 1 s invokes took {elapsed:.2f} s"


def test_sequential_invokes_reuse_the_warm_environment(server, runtime):
    name = server.create_function("warm", runtime)
    results = [server.invoke(name, {"echo": i}).json() for i in range(3)]
    assert [r["count"] for r in results] == [1, 2, 3], results
    assert len({r["pid"] for r in results}) == 1
    assert len({r["log_stream_name"] for r in results}) == 1


def test_context_fields(server, basic_functions, runtime):
    name = basic_functions(runtime)
    inv = server.invoke(name, {"echo": 1})
    ctx = inv.json()
    assert re.fullmatch(UUID_RE, ctx["request_id"])
    assert ctx["function_name"] == name
    assert ctx["function_version"] == "$LATEST"
    assert int(ctx["memory_limit_in_mb"]) == 256
    assert ctx["invoked_function_arn"] == arn(name)
    assert ctx["log_group_name"] == f"/aws/lambda/{name}"
    assert re.fullmatch(LOG_STREAM_RE, ctx["log_stream_name"]), ctx["log_stream_name"]
    assert 8000 < ctx["remaining_time_ms"] <= 10000, ctx["remaining_time_ms"]
    if runtime == "provided.al2023":
        now_ms = time.time() * 1000
        assert now_ms < ctx["deadline"] <= now_ms + 10000 + 1000
    second = server.invoke(name, {"echo": 2}).json()
    assert second["request_id"] != ctx["request_id"]


def test_invoked_function_arn_is_the_arn_as_invoked(server, basic_functions):
    name = basic_functions("python3.11")
    inv = server.invoke(f"{arn(name)}:$LATEST", {"echo": 1})
    assert inv.json()["invoked_function_arn"] == f"{arn(name)}:$LATEST"


def test_environment_variables_of_the_function(server, basic_functions, runtime):
    name = basic_functions(runtime)
    env = server.invoke(name, {"env": True}).json()
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert re.fullmatch(LOG_STREAM_RE, env["AWS_LAMBDA_LOG_STREAM_NAME"])
    assert env["AWS_REGION"] == REGION
    assert env["AWS_DEFAULT_REGION"] == REGION
    assert re.fullmatch(r"[^/:]+:\d+", env["AWS_LAMBDA_RUNTIME_API"]), env["AWS_LAMBDA_RUNTIME_API"]
    assert env["_HANDLER"]
    assert env["LAMBDA_TASK_ROOT"]
    assert env["MY_VAR"] == "hello"


def test_server_environment_is_not_leaked_to_functions(server, basic_functions, runtime):
    secret_key, secret_value = SERVER_SECRET_ENV
    with open(f"/proc/{server.proc.pid}/environ", "rb") as f:
        assert f"{secret_key}={secret_value}".encode() in f.read().split(b"\0"), \
            "the server under test must hold the secret for this test to mean anything"
    env = server.invoke(basic_functions(runtime), {"env": True}).json()
    assert secret_key not in env
    assert not [k for k, v in env.items() if secret_value in v], "server secret leaked"
    assert not [k for k in env if k.startswith("NIMBUS_")], env.keys()

