"""Concurrency controls (issue 4): reserved concurrency (Put/Get/DeleteFunctionConcurrency and
its throttling), the account settings that follow from it, provisioned concurrency
(Put/Get/Delete/ListProvisionedConcurrencyConfig(s), environments initialised ahead of time,
FAILED on init errors), scale-out under a burst, scale-in to zero after the keep-alive, and the
signed `GET /nimbus/status` endpoint that makes all of it observable.

Functions are tests/e2e/fixtures_issue4/probe (reports AWS_LAMBDA_INITIALIZATION_TYPE and a
per-environment id, sleeps on request) and fixtures_issue4/init_fails (init always raises).
Invocations that may be throttled go through clients made by `no_retry_client`: a botocore
`retries={"max_attempts": 1}` (what helpers.client_config sets) still means ONE retry, because
botocore reads `max_attempts` in a client config as retries; `total_max_attempts: 1` is what
turns retrying off, so every 429 is seen (and counted by the server) exactly once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from helpers import (
    ACCESS_KEY,
    ACCOUNT,
    REGION,
    ROLE,
    SECRET_KEY,
    client_config,
    REPORT_RE,
    error_code,
    error_status,
    function_processes,
    report_line_for,
    wait_until,
    zip_dir,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures_issue4"
RUNTIME = "python3.11"
THROTTLE_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"
PROVISIONED = "provisioned-concurrency"
LIMIT = 40  # --concurrency-limit of the module's server: minimum unreserved = min(100, 40/10)
MIN_UNRESERVED = 4


# --------------------------------------------------------------------------------------
# helpers


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def status_of(response: dict) -> int:
    return response["ResponseMetadata"]["HTTPStatusCode"]


def create_probe(server, prefix: str, timeout: int = 30) -> str:
    return server.create_function(prefix, RUNTIME, zip_dir(FIXTURES / "probe"),
                                  Timeout=timeout, MemorySize=128)


_SESSIONS: dict = {}


def no_retry_client(server):
    """A Lambda client of `server` that never retries. Clients come from one boto3 session per
    server (the session caches the service model, which makes 50 clients quick to build)."""
    session = _SESSIONS.get(server.endpoint)
    if session is None:
        session = _SESSIONS[server.endpoint] = boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            region_name=REGION)
    return session.client("lambda", endpoint_url=server.endpoint, config=client_config(
        retries={"total_max_attempts": 1, "mode": "standard"}))


def cli_json(result):
    rc, out, err = result
    assert rc == 0, err
    return json.loads(out) if out.strip() else None


def client_error(fn, *args, **kw) -> ClientError:
    with pytest.raises(ClientError) as exc:
        fn(*args, **kw)
    return exc.value


def nimbus_status(server) -> dict:
    resp = server.raw("GET", "/nimbus/status")
    assert resp.status == 200, resp.body
    return resp.json()


def function_status(server, name: str) -> dict:
    for f in nimbus_status(server)["Functions"]:
        if f["FunctionName"] == name:
            return f
    return {"FunctionName": name, "ConcurrentExecutions": 0, "Throttles": 0}


def pool_counts(server, name: str, version: str | None = None, status=None) -> tuple[int, int]:
    """(idle, busy) environments of a function (one version of it) per /nimbus/status."""
    status = status or nimbus_status(server)
    idle = busy = 0
    for p in status["Pools"]:
        if p["FunctionName"] == name and (version is None or p["Version"] == version):
            idle += p["IdleEnvironments"]
            busy += p["BusyEnvironments"]
    return idle, busy


def processes_with(name: str, marker: str) -> set[int]:
    """Live processes of function `name` whose environment holds `marker` (KEY=value)."""
    found = set()
    for pid in function_processes(name):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in env:
            found.add(pid)
    return found


def report_of(inv) -> "re.Match":
    rid = inv.headers["x-amzn-requestid"]
    line = report_line_for(inv.log_tail.splitlines(), rid)
    m = REPORT_RE.match(line or "")
    assert m, f"no REPORT line for {rid} in:\n{inv.log_tail}"
    return m


def parallel_invokes(server, name: str, payloads: list, timing: dict | None = None,
                     **kw) -> list:
    """Invokes concurrently, one client (and connection) each, all released at once.
    Returns Invocation or ClientError per payload, in order. `timing["elapsed"]` is set to
    the seconds from the release to the last answer (client set-up not included)."""
    clients = [no_retry_client(server) for _ in payloads]
    barrier = threading.Barrier(len(payloads))
    spans = [None] * len(payloads)

    def call(i):
        barrier.wait()
        started = time.monotonic()
        try:
            return server.invoke(name, payloads[i], client=clients[i], **kw)
        except ClientError as exc:
            return exc
        finally:
            spans[i] = (started, time.monotonic())

    with ThreadPoolExecutor(len(payloads)) as pool:
        results = list(pool.map(call, range(len(payloads))))
    if timing is not None:
        timing["elapsed"] = max(e for _, e in spans) - min(s for s, _ in spans)
    return results


def assert_reserved_throttle(exc):
    assert isinstance(exc, ClientError), exc
    assert error_status(exc) == 429, exc.response
    assert error_code(exc) == "TooManyRequestsException", exc.response
    assert exc.response.get("Reason") == THROTTLE_REASON, exc.response


def get_pc(server, name: str, qualifier: str) -> dict:
    return server.lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)


def wait_pc_status(server, name: str, qualifier: str, wanted: str, timeout: float = 60):
    def check():
        cfg = get_pc(server, name, qualifier)
        if wanted != "FAILED":
            assert cfg["Status"] != "FAILED", cfg
        return cfg if cfg["Status"] == wanted else None

    return wait_until(check, timeout, 0.1, f"provisioned concurrency of {name}:{qualifier} "
                                            f"to be {wanted}")


@pytest.fixture(scope="module")
def ctl(make_module_server):
    """A server with a small account limit, so the minimum unreserved share is testable."""
    return make_module_server(extra_args=("--concurrency-limit", str(LIMIT)))


@pytest.fixture(scope="module")
def unvalidated(ctl):
    """A boto3 client that sends what it is given (no client-side range checks)."""
    return ctl.client("lambda", parameter_validation=False)


# --------------------------------------------------------------------------------------
# reserved concurrency


def test_reserved_concurrency_put_get_delete_with_boto3_and_aws_cli(ctl):
    name = create_probe(ctl, "reserved")
    assert ctl.lam.get_function_concurrency(FunctionName=name).get(
        "ReservedConcurrentExecutions") is None

    put = ctl.lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    assert status_of(put) == 200
    assert put["ReservedConcurrentExecutions"] == 3
    assert ctl.lam.get_function_concurrency(FunctionName=name)[
        "ReservedConcurrentExecutions"] == 3
    assert cli_json(ctl.aws("lambda", "get-function-concurrency", "--function-name", name)) == \
        {"ReservedConcurrentExecutions": 3}
    assert ctl.lam.get_function(FunctionName=name)["Concurrency"] == \
        {"ReservedConcurrentExecutions": 3}

    out = cli_json(ctl.aws("lambda", "put-function-concurrency", "--function-name", name,
                           "--reserved-concurrent-executions", "5"))
    assert out == {"ReservedConcurrentExecutions": 5}
    assert ctl.lam.get_function_concurrency(FunctionName=arn(name))[
        "ReservedConcurrentExecutions"] == 5

    rc, out, err = ctl.aws("lambda", "delete-function-concurrency", "--function-name", name)
    assert rc == 0, err
    assert ctl.lam.get_function_concurrency(FunctionName=name).get(
        "ReservedConcurrentExecutions") is None
    assert "ReservedConcurrentExecutions" not in ctl.lam.get_function(FunctionName=name).get(
        "Concurrency", {})

    ctl.lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    resp = ctl.lam.delete_function_concurrency(FunctionName=name)
    assert status_of(resp) == 204
    assert ctl.lam.get_function_concurrency(FunctionName=name).get(
        "ReservedConcurrentExecutions") is None

    missing = "no-such-function-reserved"
    for call in (lambda: ctl.lam.put_function_concurrency(FunctionName=missing,
                                                          ReservedConcurrentExecutions=1),
                 lambda: ctl.lam.get_function_concurrency(FunctionName=missing),
                 lambda: ctl.lam.delete_function_concurrency(FunctionName=missing)):
        exc = client_error(call)
        assert error_status(exc) == 404 and error_code(exc) == "ResourceNotFoundException"


def test_account_settings_stay_consistent_with_reservations(ctl, unvalidated):
    f1, f2, f3 = (create_probe(ctl, p) for p in ("acct1", "acct2", "acct3"))
    base = ctl.lam.get_account_settings()["AccountLimit"]
    assert base["ConcurrentExecutions"] == LIMIT
    unreserved = base["UnreservedConcurrentExecutions"]
    assert unreserved == LIMIT, "no other test of this module leaves a reservation behind"
    try:
        ctl.lam.put_function_concurrency(FunctionName=f1, ReservedConcurrentExecutions=3)
        cli_json(ctl.aws("lambda", "put-function-concurrency", "--function-name", f2,
                         "--reserved-concurrent-executions", "10"))
        limit = ctl.lam.get_account_settings()["AccountLimit"]
        assert limit["ConcurrentExecutions"] == LIMIT
        assert limit["UnreservedConcurrentExecutions"] == LIMIT - 13
        cli = cli_json(ctl.aws("lambda", "get-account-settings"))["AccountLimit"]
        assert cli["ConcurrentExecutions"] == LIMIT
        assert cli["UnreservedConcurrentExecutions"] == LIMIT - 13

        # a reservation may not leave less than the minimum unreserved
        too_much = LIMIT - 13 - MIN_UNRESERVED + 1
        exc = client_error(ctl.lam.put_function_concurrency, FunctionName=f3,
                           ReservedConcurrentExecutions=too_much)
        assert error_status(exc) == 400
        assert error_code(exc) == "InvalidParameterValueException"
        assert f"minimum value of [{MIN_UNRESERVED}]" in exc.response["Error"]["Message"]
        rc, out, err = ctl.aws("lambda", "put-function-concurrency", "--function-name", f3,
                               "--reserved-concurrent-executions", str(too_much))
        assert rc != 0 and "InvalidParameterValueException" in err, (out, err)
        assert ctl.lam.get_function_concurrency(FunctionName=f3).get(
            "ReservedConcurrentExecutions") is None
        assert ctl.lam.get_account_settings()["AccountLimit"][
            "UnreservedConcurrentExecutions"] == LIMIT - 13

        # exactly the minimum left is fine
        ctl.lam.put_function_concurrency(FunctionName=f3,
                                         ReservedConcurrentExecutions=too_much - 1)
        assert ctl.lam.get_account_settings()["AccountLimit"][
            "UnreservedConcurrentExecutions"] == MIN_UNRESERVED
        # raising another reservation now breaks the minimum; lowering it frees units
        exc = client_error(ctl.lam.put_function_concurrency, FunctionName=f1,
                           ReservedConcurrentExecutions=4)
        assert error_code(exc) == "InvalidParameterValueException"
        assert ctl.lam.get_function_concurrency(FunctionName=f1)[
            "ReservedConcurrentExecutions"] == 3
        ctl.lam.put_function_concurrency(FunctionName=f1, ReservedConcurrentExecutions=1)
        assert ctl.lam.get_account_settings()["AccountLimit"][
            "UnreservedConcurrentExecutions"] == MIN_UNRESERVED + 2

        # out-of-range values are refused whatever the client checks
        for bad in (-1, LIMIT + 1):
            exc = client_error(unvalidated.put_function_concurrency, FunctionName=f1,
                               ReservedConcurrentExecutions=bad)
            assert error_status(exc) == 400, bad
            assert error_code(exc) in ("InvalidParameterValueException",
                                       "ValidationException"), bad

        # deleting a function gives its reservation back
        ctl.lam.delete_function(FunctionName=f3)
        assert ctl.lam.get_account_settings()["AccountLimit"][
            "UnreservedConcurrentExecutions"] == LIMIT - 11
    finally:
        for f in (f1, f2, f3):
            try:
                ctl.lam.delete_function_concurrency(FunctionName=f)
            except ClientError:
                pass
    assert ctl.lam.get_account_settings()["AccountLimit"][
        "UnreservedConcurrentExecutions"] == LIMIT


def test_a_function_created_again_does_not_inherit_the_deleted_ones_reservation(make_server):
    """DeleteFunction removes the function's reserved concurrency: a function created again
    under the same name starts without one, and runs."""
    s = make_server(extra_args=("--concurrency-limit", str(LIMIT)))
    zip_bytes = zip_dir(FIXTURES / "probe")
    name = s.create_function("reborn", RUNTIME, zip_bytes, Timeout=30)
    s.lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert_reserved_throttle(client_error(s.invoke, name, {}, client=no_retry_client(s)))
    s.lam.delete_function(FunctionName=name)
    s.lam.create_function(FunctionName=name, Runtime=RUNTIME, Role=ROLE,
                          Handler="app.handler", Code={"ZipFile": zip_bytes}, Timeout=30)
    s.wait_active(name)
    assert s.lam.get_function_concurrency(FunctionName=name).get(
        "ReservedConcurrentExecutions") is None
    assert s.lam.get_account_settings()["AccountLimit"][
        "UnreservedConcurrentExecutions"] == LIMIT
    try:
        inv = s.invoke(name, {"marker": "reborn"}, client=no_retry_client(s))
    except ClientError as exc:
        pytest.fail(f"the new function {name} has no reservation, but its invocation got "
                    f"{error_status(exc)} {error_code(exc)} {exc.response.get('Reason')}: "
                    "the deleted function's reserved concurrency 0 still applies")
    assert inv.json()["marker"] == "reborn"


def test_deleting_a_function_returns_its_reservation_to_the_shared_pool(make_server):
    """The units a deleted function reserved go back to the unreserved share, for admission
    as well as in GetAccountSettings."""
    s = make_server(extra_args=("--concurrency-limit", str(LIMIT)))
    big = create_probe(s, "big")
    s.lam.put_function_concurrency(FunctionName=big,
                                   ReservedConcurrentExecutions=LIMIT - MIN_UNRESERVED)
    assert s.lam.get_account_settings()["AccountLimit"][
        "UnreservedConcurrentExecutions"] == MIN_UNRESERVED
    s.lam.delete_function(FunctionName=big)
    assert s.lam.get_account_settings()["AccountLimit"][
        "UnreservedConcurrentExecutions"] == LIMIT
    shared = create_probe(s, "shared")
    n = MIN_UNRESERVED + 4
    results = parallel_invokes(s, shared, [{"sleep_ms": 1500}] * n)
    throttled = [r.response for r in results if isinstance(r, ClientError)]
    assert not throttled, \
        f"{len(throttled)} of {n} parallel invocations were throttled although the account " \
        f"reports {LIMIT} unreserved (the deleted function's {LIMIT - MIN_UNRESERVED} still " \
        f"count against the shared pool): {throttled[:1]}"


def test_invocations_beyond_reserved_concurrency_are_throttled_exactly(ctl):
    name = create_probe(ctl, "throttle")
    other = create_probe(ctl, "bystander")
    ctl.lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=3)
    try:
        before = function_status(ctl, name)["Throttles"]
        payloads = [{"sleep_ms": 2000, "marker": i} for i in range(8)]
        box = {}

        def observe():
            # while the three run: the status endpoint sees exactly three in flight, a raw
            # request gets the wire shape of the 429, and other functions are not starved
            try:
                wait_until(lambda: function_status(ctl, name)["ConcurrentExecutions"] == 3,
                           timeout=10, interval=0.02, message="three executions in flight")
                box["raw"] = ctl.raw("POST", f"/2015-03-31/functions/{name}/invocations",
                                     b"{}")
                box["in_flight"] = function_status(ctl, name)["ConcurrentExecutions"]
                box["other"] = ctl.invoke(other, {"marker": "bystander"},
                                          client=no_retry_client(ctl))
            except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
                box["error"] = exc

        watcher = threading.Thread(target=observe)
        watcher.start()
        timing = {}
        results = parallel_invokes(ctl, name, payloads, timing)
        elapsed = timing["elapsed"]
        watcher.join(timeout=60)

        ok = [r for r in results if not isinstance(r, ClientError)]
        throttled = [r for r in results if isinstance(r, ClientError)]
        assert (len(ok), len(throttled)) == (3, 5), \
            f"reserved 3 with 8 parallel invokes: {len(ok)} ran, {len(throttled)} throttled: " \
            f"{[getattr(r, 'response', None) for r in throttled]}"
        for r in ok:
            assert r.function_error is None, r.payload
            assert r.json()["marker"] in range(8)
        assert len({r.json()["init_id"] for r in ok}) == 3, "three environments ran"
        for exc in throttled:
            assert_reserved_throttle(exc)
            assert exc.response["Error"]["Message"]
        assert elapsed < 15, elapsed

        if "error" in box:
            raise box["error"]
        raw = box["raw"]
        assert raw.status == 429, raw.body
        assert raw.error_type.split(":")[0] == "TooManyRequestsException"
        body = raw.json()
        assert body["Reason"] == THROTTLE_REASON, body
        assert body["Type"] == "User"
        assert body.get("message") or body.get("Message")
        assert box["in_flight"] == 3
        assert box["other"].function_error is None and \
            box["other"].json()["marker"] == "bystander"

        after = function_status(ctl, name)
        assert after["Throttles"] - before == 6, after  # 5 boto3 + 1 raw
        wait_until(lambda: function_status(ctl, name)["ConcurrentExecutions"] == 0, timeout=10,
                   message="no executions in flight")

        # the slots came back: three at a time run again
        again = parallel_invokes(ctl, name, [{"sleep_ms": 300}] * 3)
        assert all(not isinstance(r, ClientError) and r.function_error is None for r in again), \
            again
    finally:
        ctl.lam.delete_function_concurrency(FunctionName=name)


def test_reserved_concurrency_zero_throttles_every_invocation(ctl, tmp_path):
    name = create_probe(ctl, "zero")
    before_settings = ctl.lam.get_account_settings()["AccountLimit"][
        "UnreservedConcurrentExecutions"]
    out = cli_json(ctl.aws("lambda", "put-function-concurrency", "--function-name", name,
                           "--reserved-concurrent-executions", "0"))
    assert out == {"ReservedConcurrentExecutions": 0}
    try:
        assert ctl.lam.get_function_concurrency(FunctionName=name) \
            .get("ReservedConcurrentExecutions") == 0
        assert ctl.lam.get_account_settings()["AccountLimit"][
            "UnreservedConcurrentExecutions"] == before_settings
        before = function_status(ctl, name)["Throttles"]
        client = no_retry_client(ctl)
        for i in range(5):
            exc = client_error(ctl.invoke, name, {"marker": i}, client=client)
            assert_reserved_throttle(exc)
        for exc in parallel_invokes(ctl, name, [{}] * 4):
            assert_reserved_throttle(exc)
        rc, out, err = ctl.aws("lambda", "invoke", "--function-name", name,
                               "--payload", "{}", str(tmp_path / "out.json"))
        assert rc != 0 and "TooManyRequestsException" in err, (out, err)
        assert function_status(ctl, name)["Throttles"] - before == 10
        assert not function_processes(name), "a throttled function must not start anything"
        assert pool_counts(ctl, name) == (0, 0)
    finally:
        ctl.lam.delete_function_concurrency(FunctionName=name)
    inv = ctl.invoke(name, {"marker": "free"})
    assert inv.function_error is None and inv.json()["marker"] == "free"


# --------------------------------------------------------------------------------------
# provisioned concurrency


def test_provisioned_environments_are_ready_before_the_first_invoke_and_spill_over(ctl):
    name = create_probe(ctl, "provisioned")
    assert ctl.lam.publish_version(FunctionName=name)["Version"] == "1"
    ctl.lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    put = ctl.lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2)
    assert status_of(put) == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] == "IN_PROGRESS", put
    assert put["AllocatedProvisionedConcurrentExecutions"] <= 2
    assert put["LastModified"]

    ready = wait_pc_status(ctl, name, "live", "READY")
    assert ready["RequestedProvisionedConcurrentExecutions"] == 2
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2
    cli = cli_json(ctl.aws("lambda", "get-provisioned-concurrency-config", "--function-name",
                           name, "--qualifier", "live"))
    assert cli["Status"] == "READY"
    assert cli["AllocatedProvisionedConcurrentExecutions"] == 2

    # before any invocation: two initialised environments of version 1, idle, initialised
    # with AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency
    assert pool_counts(ctl, name, "1") == (2, 0)
    assert processes_with(name, f"AWS_LAMBDA_INITIALIZATION_TYPE={PROVISIONED}")

    first = ctl.invoke(name, {}, Qualifier="live", LogType="Tail")
    assert first.function_error is None, first.payload
    body = first.json()
    assert first.headers["x-amz-executed-version"] == "1"
    assert body["init_type"] == PROVISIONED
    assert body["init_type_at_init"] == PROVISIONED
    assert body["count"] == 1
    assert report_of(first)["init"] is None, \
        f"a provisioned environment has no Init Duration:\n{first.log_tail}"

    # three at once: two provisioned environments, the third spills over on demand
    results = parallel_invokes(ctl, name, [{"sleep_ms": 1500}] * 3,
                               Qualifier="live", LogType="Tail")
    assert all(not isinstance(r, ClientError) and r.function_error is None for r in results), \
        results
    kinds = sorted(r.json()["init_type"] for r in results)
    assert kinds == ["on-demand", PROVISIONED, PROVISIONED], kinds
    assert len({r.json()["init_id"] for r in results}) == 3
    for r in results:
        report = report_of(r)
        if r.json()["init_type"] == PROVISIONED:
            assert report["init"] is None, r.log_tail
        else:
            assert report["init"] is not None, \
                f"the on-demand environment's first REPORT has Init Duration:\n{r.log_tail}"
    provisioned_ids = {r.json()["init_id"] for r in results if r.json()["init_type"] == PROVISIONED}
    assert body["init_id"] in provisioned_ids

    # listed, then deleted: the provisioned environments go away
    listed = ctl.lam.list_provisioned_concurrency_configs(FunctionName=name)
    configs = listed["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"] for c in configs] == [arn(name, "live")]
    assert configs[0]["Status"] == "READY"
    resp = ctl.lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert status_of(resp) == 204
    exc = client_error(get_pc, ctl, name, "live")
    assert error_status(exc) == 404
    assert error_code(exc) == "ProvisionedConcurrencyConfigNotFoundException"
    wait_until(lambda: not processes_with(name, f"AWS_LAMBDA_INITIALIZATION_TYPE={PROVISIONED}"),
               timeout=15, message="the provisioned environments to be destroyed")
    assert ctl.lam.list_provisioned_concurrency_configs(FunctionName=name)[
        "ProvisionedConcurrencyConfigs"] == []
    # the function still runs, now on demand
    inv = ctl.invoke(name, {}, Qualifier="live")
    assert inv.function_error is None and inv.json()["init_type"] == "on-demand"


def test_provisioned_concurrency_on_versions_and_aliases_with_aws_cli(ctl):
    name = create_probe(ctl, "pclist")
    ctl.lam.publish_version(FunctionName=name)
    ctl.lam.update_function_configuration(FunctionName=name,
                                          Environment={"Variables": {"TAG": "two"}})
    ctl.wait_active(name)
    assert ctl.lam.publish_version(FunctionName=name)["Version"] == "2"
    ctl.lam.create_alias(FunctionName=name, Name="blue", FunctionVersion="2")

    put = cli_json(ctl.aws("lambda", "put-provisioned-concurrency-config", "--function-name",
                           name, "--qualifier", "1", "--provisioned-concurrent-executions", "1"))
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    assert put["Status"] in ("IN_PROGRESS", "READY")
    ctl.lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="blue",
                                               ProvisionedConcurrentExecutions=1)
    wait_pc_status(ctl, name, "1", "READY")
    wait_pc_status(ctl, name, "blue", "READY")
    assert pool_counts(ctl, name, "1") == (1, 0)
    assert pool_counts(ctl, name, "2") == (1, 0)

    listed = ctl.lam.list_provisioned_concurrency_configs(FunctionName=name)
    by_arn = {c["FunctionArn"]: c for c in listed["ProvisionedConcurrencyConfigs"]}
    assert set(by_arn) == {arn(name, "1"), arn(name, "blue")}
    for c in by_arn.values():
        assert c["RequestedProvisionedConcurrentExecutions"] == 1
        assert c["AllocatedProvisionedConcurrentExecutions"] == 1
        assert c["AvailableProvisionedConcurrentExecutions"] == 1
        assert c["Status"] == "READY"
        assert c["LastModified"]
    page = ctl.lam.list_provisioned_concurrency_configs(FunctionName=name, MaxItems=1)
    assert len(page["ProvisionedConcurrencyConfigs"]) == 1 and page.get("NextMarker")
    rest = ctl.lam.list_provisioned_concurrency_configs(FunctionName=name, MaxItems=1,
                                                        Marker=page["NextMarker"])
    assert {page["ProvisionedConcurrencyConfigs"][0]["FunctionArn"],
            rest["ProvisionedConcurrencyConfigs"][0]["FunctionArn"]} == set(by_arn)
    cli = cli_json(ctl.aws("lambda", "list-provisioned-concurrency-configs",
                           "--function-name", name))
    assert {c["FunctionArn"] for c in cli["ProvisionedConcurrencyConfigs"]} == set(by_arn)

    # invoking the version directly uses its provisioned environment
    inv = ctl.invoke(name, {}, Qualifier="1", LogType="Tail")
    assert inv.json()["init_type"] == PROVISIONED and report_of(inv)["init"] is None
    inv = ctl.invoke(name, {}, Qualifier="blue", LogType="Tail")
    assert inv.json()["init_type"] == PROVISIONED and inv.json()["tag"] == "two"

    rc, out, err = ctl.aws("lambda", "delete-provisioned-concurrency-config", "--function-name",
                           name, "--qualifier", "1")
    assert rc == 0, err
    cli = cli_json(ctl.aws("lambda", "list-provisioned-concurrency-configs",
                           "--function-name", name))
    assert [c["FunctionArn"] for c in cli["ProvisionedConcurrencyConfigs"]] == [arn(name, "blue")]
    rc, out, err = ctl.aws("lambda", "get-provisioned-concurrency-config", "--function-name",
                           name, "--qualifier", "1")
    assert rc != 0 and "ProvisionedConcurrencyConfigNotFoundException" in err, (out, err)
    # version 1 only ever ran on its provisioned environment: nothing of it is left
    wait_until(lambda: pool_counts(ctl, name, "1") == (0, 0), timeout=15,
               message="the provisioned environment of version 1 to be destroyed")
    assert pool_counts(ctl, name, "2") == (1, 0), "the alias's environment stays"
    ctl.lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="blue")
    wait_until(lambda: not processes_with(name, f"AWS_LAMBDA_INITIALIZATION_TYPE={PROVISIONED}"),
               timeout=15, message="the provisioned environments to be destroyed")


def test_provisioned_concurrency_follows_its_alias_to_a_new_version(ctl):
    name = create_probe(ctl, "pcmove")
    ctl.lam.publish_version(FunctionName=name)
    ctl.lam.update_function_configuration(FunctionName=name,
                                          Environment={"Variables": {"TAG": "two"}})
    ctl.wait_active(name)
    assert ctl.lam.publish_version(FunctionName=name)["Version"] == "2"
    ctl.lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    ctl.lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live",
                                               ProvisionedConcurrentExecutions=1)
    wait_pc_status(ctl, name, "live", "READY")
    assert pool_counts(ctl, name, "1") == (1, 0)

    ctl.lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2")
    # the environments move with the alias: version 2 gets one, version 1 loses its own
    wait_until(lambda: pool_counts(ctl, name, "2") == (1, 0) and
               pool_counts(ctl, name, "1") == (0, 0), timeout=30,
               message="the provisioned environment to move to version 2")
    ready = wait_pc_status(ctl, name, "live", "READY")
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 1
    inv = ctl.invoke(name, {}, Qualifier="live", LogType="Tail")
    assert inv.headers["x-amz-executed-version"] == "2"
    assert inv.json()["tag"] == "two"
    assert inv.json()["init_type"] == PROVISIONED
    assert report_of(inv)["init"] is None
    ctl.lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")


def test_invalid_provisioned_concurrency_requests(ctl, unvalidated):
    name = create_probe(ctl, "pcbad")
    ctl.lam.publish_version(FunctionName=name)
    ctl.lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    exc = client_error(ctl.lam.put_provisioned_concurrency_config, FunctionName=name,
                       Qualifier="$LATEST", ProvisionedConcurrentExecutions=1)
    assert (error_status(exc), error_code(exc)) == (400, "InvalidParameterValueException")
    assert "unpublished" in exc.response["Error"]["Message"]

    resp = ctl.raw("PUT", f"/2019-09-30/functions/{name}/provisioned-concurrency",
                   {"ProvisionedConcurrentExecutions": 1})
    assert resp.status == 400, resp.body  # the qualifier is required

    exc = client_error(ctl.lam.put_provisioned_concurrency_config, FunctionName=name,
                       Qualifier="nosuchalias", ProvisionedConcurrentExecutions=1)
    assert (error_status(exc), error_code(exc)) == (404, "ResourceNotFoundException")
    exc = client_error(ctl.lam.put_provisioned_concurrency_config, FunctionName=name,
                       Qualifier="7", ProvisionedConcurrentExecutions=1)
    assert (error_status(exc), error_code(exc)) == (404, "ResourceNotFoundException")

    exc = client_error(unvalidated.put_provisioned_concurrency_config, FunctionName=name,
                       Qualifier="1", ProvisionedConcurrentExecutions=0)
    assert error_status(exc) == 400
    assert error_code(exc) in ("InvalidParameterValueException", "ValidationException")

    ctl.lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    try:
        exc = client_error(ctl.lam.put_provisioned_concurrency_config, FunctionName=name,
                           Qualifier="live", ProvisionedConcurrentExecutions=2)
        assert (error_status(exc), error_code(exc)) == (400, "InvalidParameterValueException")
        assert "reservedConcurrentExecution" in exc.response["Error"]["Message"]
    finally:
        ctl.lam.delete_function_concurrency(FunctionName=name)

    for call in (ctl.lam.get_provisioned_concurrency_config,
                 ctl.lam.delete_provisioned_concurrency_config):
        exc = client_error(call, FunctionName=name, Qualifier="live")
        assert error_status(exc) == 404
        assert error_code(exc) == "ProvisionedConcurrencyConfigNotFoundException"
    assert ctl.lam.list_provisioned_concurrency_configs(FunctionName=name)[
        "ProvisionedConcurrencyConfigs"] == []
    assert not function_processes(name), "nothing was provisioned"


def test_provisioned_concurrency_fails_when_init_fails(ctl):
    name = ctl.create_function("pcfail", RUNTIME, zip_dir(FIXTURES / "init_fails"),
                               Timeout=10)
    assert ctl.lam.publish_version(FunctionName=name)["Version"] == "1"
    put = ctl.lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1",
                                                     ProvisionedConcurrentExecutions=1)
    assert status_of(put) == 202
    failed = wait_pc_status(ctl, name, "1", "FAILED", timeout=60)
    assert failed["AllocatedProvisionedConcurrentExecutions"] == 0
    assert failed["AvailableProvisionedConcurrentExecutions"] == 0
    assert failed["RequestedProvisionedConcurrentExecutions"] == 1
    assert "nimbus-e2e-init-failure-marker" in failed.get("StatusReason", ""), failed
    cli = cli_json(ctl.aws("lambda", "list-provisioned-concurrency-configs",
                           "--function-name", name))
    assert [c["Status"] for c in cli["ProvisionedConcurrencyConfigs"]] == ["FAILED"]
    assert cli["ProvisionedConcurrencyConfigs"][0]["StatusReason"]

    assert status_of(ctl.lam.delete_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1")) == 204
    exc = client_error(get_pc, ctl, name, "1")
    assert error_code(exc) == "ProvisionedConcurrencyConfigNotFoundException"


def test_concurrency_settings_survive_a_restart(make_server):
    s = make_server(extra_args=("--concurrency-limit", str(LIMIT)))
    blocked = create_probe(s, "blocked")
    s.lam.put_function_concurrency(FunctionName=blocked, ReservedConcurrentExecutions=0)
    warm = create_probe(s, "warm")
    s.lam.publish_version(FunctionName=warm)
    s.lam.put_provisioned_concurrency_config(FunctionName=warm, Qualifier="1",
                                             ProvisionedConcurrentExecutions=1)
    wait_pc_status(s, warm, "1", "READY")

    s.restart()  # kill -9, same data directory
    assert s.lam.get_function_concurrency(FunctionName=blocked)[
        "ReservedConcurrentExecutions"] == 0
    assert s.lam.get_account_settings()["AccountLimit"][
        "UnreservedConcurrentExecutions"] == LIMIT
    assert_reserved_throttle(client_error(s.invoke, blocked, {}, client=no_retry_client(s)))
    ready = wait_pc_status(s, warm, "1", "READY")
    assert ready["RequestedProvisionedConcurrentExecutions"] == 1
    inv = s.invoke(warm, {}, Qualifier="1", LogType="Tail")
    assert inv.json()["init_type"] == PROVISIONED
    assert report_of(inv)["init"] is None


# --------------------------------------------------------------------------------------
# scaling out under a burst and back to zero


@pytest.fixture(scope="module")
def elastic(make_module_server):
    """A server with a short keep-alive and room for a burst."""
    return make_module_server(extra_args=("--keep-alive-secs", "2",
                                          "--concurrency-limit", "200"))


def test_burst_of_50_scales_out_and_then_back_to_zero(elastic):
    s = elastic
    name = create_probe(s, "burst")
    n = 50
    peak = {"busy": 0, "in_flight": 0, "envs": 0}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                st = nimbus_status(s)
                idle, busy = pool_counts(s, name, status=st)
                peak["busy"] = max(peak["busy"], busy)
                peak["envs"] = max(peak["envs"], idle + busy)
                f = next((f for f in st["Functions"] if f["FunctionName"] == name), None)
                if f:
                    peak["in_flight"] = max(peak["in_flight"], f["ConcurrentExecutions"])
            except Exception:  # noqa: BLE001 - a missed sample is not a failure
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    timing = {}
    try:
        results = parallel_invokes(s, name, [{"sleep_ms": 1000, "marker": i} for i in range(n)],
                                   timing)
    finally:
        stop.set()
        watcher.join(timeout=10)
    elapsed = timing["elapsed"]
    errors = [r for r in results if isinstance(r, ClientError) or r.function_error]
    assert not errors, [getattr(e, "response", getattr(e, "payload", e)) for e in errors]
    assert sorted(r.json()["marker"] for r in results) == list(range(n)), \
        "every invocation answered exactly once, with its own result"
    assert elapsed < 12, f"50 parallel 1 s invocations took {elapsed:.1f} s: no scale-out"
    streams = {r.json()["log_stream_name"] for r in results}
    envs = {r.json()["init_id"] for r in results}
    assert len(streams) >= 40 and len(envs) >= 40, (len(streams), len(envs))
    assert peak["busy"] >= 40, peak
    assert peak["in_flight"] >= 40, peak
    assert function_status(s, name)["Throttles"] == 0

    # after the 2 s keep-alive every environment is reaped: the pool goes back to zero
    def scaled_to_zero():
        idle, busy = pool_counts(s, name)
        return idle == 0 and busy == 0 and not function_processes(name)

    wait_until(scaled_to_zero, timeout=30, interval=0.2,
               message=f"the pool of {name} to scale back to zero "
                       f"(status: {pool_counts(s, name)})")
    assert function_status(s, name)["ConcurrentExecutions"] == 0
    assert nimbus_status(s)["ConcurrentExecutions"] == 0

    # and scales up again from zero: a cold start
    inv = s.invoke(name, {"marker": "again"}, LogType="Tail")
    assert inv.function_error is None and inv.json()["marker"] == "again"
    assert report_of(inv)["init"] is not None
    assert inv.json()["init_id"] not in envs


def test_no_invocation_is_lost_or_duplicated_when_reaping_races_with_scale_out(elastic):
    """Rounds of simultaneous invocations separated by pauses around the 2 s keep-alive (the
    reaper runs every 0.5 s), so idle environments are reaped just as a round wants them and
    the pool scales out again in the same moment."""
    s = elastic
    name = create_probe(s, "race")
    lanes, rounds = 6, 5
    pauses = [2.1, 2.3, 2.45, 2.7]
    clients = [no_retry_client(s) for _ in range(lanes)]
    barrier = threading.Barrier(lanes)
    run = f"race-{time.time_ns()}"

    def lane(i):
        out = []
        for r in range(rounds):
            barrier.wait()
            marker = f"{run}-{i}-{r}"
            try:
                inv = s.invoke(name, {"print": marker, "marker": marker, "sleep_ms": 300},
                               client=clients[i])
                out.append((marker, inv))
            except ClientError as exc:
                out.append((marker, exc))
            if r < rounds - 1:
                time.sleep(pauses[r % len(pauses)])
        return out

    with ThreadPoolExecutor(lanes) as pool:
        results = [x for chunk in pool.map(lane, range(lanes)) for x in chunk]

    assert len(results) == lanes * rounds
    for marker, inv in results:
        assert not isinstance(inv, ClientError), (marker, inv.response)
        assert inv.function_error is None, (marker, inv.payload)
        assert inv.json()["marker"] == marker, (marker, inv.payload)

    markers = [m for m, _ in results]

    def each_once(messages):
        counts = {m: 0 for m in markers}
        for msg in messages:
            text = msg.rstrip("\n")
            if text in counts:
                counts[text] += 1
        return counts if all(c >= 1 for c in counts.values()) else None

    def complete(messages):
        # The log writer adds REPORT after the caller has its answer: wait for all of them.
        reports = sum(1 for m in messages if m.startswith("REPORT RequestId:"))
        return each_once(messages) is not None and reports >= lanes * rounds

    messages = s.wait_log(name, complete, timeout=30)
    counts = each_once(messages)
    assert all(c == 1 for c in counts.values()), \
        {m: c for m, c in counts.items() if c != 1}
    starts = [m for m in messages if m.startswith("START RequestId:")]
    reports = [m for m in messages if m.startswith("REPORT RequestId:")]
    assert len(starts) == len(reports) == lanes * rounds, (len(starts), len(reports))
    cold = sum(1 for m in reports if (r := REPORT_RE.match(m)) and r["init"] is not None)
    assert cold > lanes, \
        f"only {cold} cold starts: environments were never reaped between invocations, " \
        "so the race was not exercised"
    wait_until(lambda: function_status(s, name)["ConcurrentExecutions"] == 0, timeout=10,
               message="nothing stuck in flight")


def test_provisioned_environments_outlive_the_keep_alive(elastic):
    s = elastic
    name = create_probe(s, "pckeep")
    s.lam.publish_version(FunctionName=name)
    s.lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1",
                                             ProvisionedConcurrentExecutions=1)
    wait_pc_status(s, name, "1", "READY")
    results = parallel_invokes(s, name, [{"sleep_ms": 800}] * 2, Qualifier="1")
    kinds = sorted(r.json()["init_type"] for r in results)
    assert kinds == ["on-demand", PROVISIONED], kinds
    provisioned_id = next(r.json()["init_id"] for r in results
                          if r.json()["init_type"] == PROVISIONED)
    # the on-demand environment is reaped after the 2 s keep-alive ...
    wait_until(lambda: pool_counts(s, name, "1") == (1, 0), timeout=20, interval=0.1,
               message="the on-demand environment to be reaped")
    # ... the provisioned one stays, initialised and READY
    assert get_pc(s, name, "1")["Status"] == "READY"
    inv = s.invoke(name, {}, client=no_retry_client(s), Qualifier="1", LogType="Tail")
    assert inv.json()["init_type"] == PROVISIONED
    assert inv.json()["init_id"] == provisioned_id
    assert report_of(inv)["init"] is None
    s.lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    wait_until(lambda: pool_counts(s, name) == (0, 0) and not function_processes(name),
               timeout=20, message="the pool to scale to zero once nothing is provisioned")


def test_status_endpoint_needs_a_signature(ctl):
    resp = ctl.raw("GET", "/nimbus/status", sign=False)
    assert resp.status in (401, 403), (resp.status, resp.body)
    st = nimbus_status(ctl)
    assert {"ConcurrentExecutions", "Pools", "Functions"} <= set(st)
