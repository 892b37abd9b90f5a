"""Function logs: Lambda's exact START / END / REPORT lines, one stream per environment,
the CloudWatch Logs API subset, and durability across a restart."""

from __future__ import annotations

import json
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

from helpers import (
    END_RE, LOG_STREAM_RE, REPORT_RE, START_RE, report_line_for, strip_line, wait_until,
)

# Platform-written lines are tested with the official Rust client (tests/functions/rust-function),
# so they do not depend on the managed-runtime bootstraps.
PLATFORM_RUNTIME = "provided.al2023"


def invoke_and_get_stream(server, name, payload):
    """Invokes, returns (request id, log stream name, the stream's messages up to REPORT)."""
    inv = server.invoke(name, payload, LogType="Tail")
    assert inv.function_error is None or "error" in payload, inv.payload
    rid = re.search(r"START RequestId: (\S+)", inv.log_tail).group(1)
    msgs = server.wait_log(name, lambda ms: report_line_for(ms, rid) is not None)
    streams = server.logs.describe_log_streams(logGroupName=f"/aws/lambda/{name}")["logStreams"]
    assert streams, "no log stream"
    stream = None
    for s in streams:
        events = server.log_events(name, s["logStreamName"])
        if any(e["message"].startswith(f"START RequestId: {rid}") for e in events):
            stream = s["logStreamName"]
            msgs = [e["message"] for e in events]
    assert stream, f"no stream holds the START line of {rid}"
    return rid, stream, msgs


def lines_of(msgs, rid):
    """The messages from this request's START through its REPORT."""
    start = next(i for i, m in enumerate(msgs) if m.startswith(f"START RequestId: {rid}"))
    end = next(i for i, m in enumerate(msgs) if m.startswith(f"REPORT RequestId: {rid}"))
    return msgs[start:end + 1]


def test_start_end_report_lines_have_lambdas_exact_format(server):
    name = server.create_function("logfmt", PLATFORM_RUNTIME)
    rid, stream, msgs = invoke_and_get_stream(server, name, {"print": "hello from the function"})
    assert re.fullmatch(LOG_STREAM_RE, stream), stream
    lines = lines_of(msgs, rid)

    start = START_RE.match(lines[0])
    assert start, repr(lines[0])
    assert start["id"] == rid and start["version"] == "$LATEST"

    end = END_RE.match(lines[-2])
    assert end and end["id"] == rid, repr(lines[-2])

    report = REPORT_RE.match(lines[-1])
    assert report, repr(lines[-1])
    assert report["id"] == rid
    assert report["memory"] == "128"

    assert "hello from the function" in [strip_line(m) for m in lines[1:-2]]


def test_function_stdout_and_stderr_lines_are_between_start_and_end(server, basic_functions,
                                                                    runtime):
    name = basic_functions(runtime)
    out_lines = [f"stdout line {i} {time.time_ns()}" for i in range(3)]
    payload = {"print": out_lines}
    if runtime != "provided.al2023":
        payload["stderr"] = f"stderr line {time.time_ns()}"
    rid, _, msgs = invoke_and_get_stream(server, name, payload)
    body = [strip_line(m) for m in lines_of(msgs, rid)[1:-2]]

    def position(line):
        # Node's console methods prefix "<time>\t<request id>\tINFO\t", as on Lambda
        hits = [i for i, b in enumerate(body) if b == line or b.endswith("\t" + line)]
        assert hits, (line, body)
        return hits[0]

    positions = [position(line) for line in out_lines]
    assert positions == sorted(positions), "lines keep their order"
    if "stderr" in payload:
        position(payload["stderr"])


def test_init_duration_only_on_the_first_invoke_of_an_environment(server):
    name = server.create_function("initdur", PLATFORM_RUNTIME)
    rid1, stream1, _ = invoke_and_get_stream(server, name, {"echo": 1})
    rid2, stream2, msgs = invoke_and_get_stream(server, name, {"echo": 2})
    assert stream1 == stream2, "the second invoke reuses the warm environment"
    first = REPORT_RE.match(report_line_for(msgs, rid1))
    second = REPORT_RE.match(report_line_for(msgs, rid2))
    assert first and second
    assert first["init"] is not None, "cold start must report Init Duration"
    assert float(first["init"]) > 0
    assert second["init"] is None, "warm invoke must not report Init Duration"


def test_billed_duration_is_the_ceiling_of_duration(server):
    name = server.create_function("billing", PLATFORM_RUNTIME)
    reports = []
    for payload in ({"echo": 1}, {"sleep_ms": 120}, {"sleep_ms": 7}, {"echo": 2}):
        rid, _, msgs = invoke_and_get_stream(server, name, payload)
        reports.append((payload, REPORT_RE.match(report_line_for(msgs, rid))))
    for payload, m in reports:
        duration = Decimal(m["duration"])
        # Billing is the ceiling of the exact duration, which the line shows rounded to two
        # decimals: "1.00" may stand for 1.003 ms, billed 2 ms. So a whole printed value
        # allows one more millisecond; anything else must be exactly its ceiling (rounding
        # down, or billing whole seconds, fails either way).
        allowed = {max(1, math.ceil(duration))}
        if duration == duration.to_integral_value():
            allowed.add(int(duration) + 1)
        assert int(m["billed"]) in allowed, m.group(0)
        if "sleep_ms" in payload:
            assert duration >= payload["sleep_ms"], m.group(0)
            assert duration < payload["sleep_ms"] + 1000, m.group(0)


def test_max_memory_used_is_measured(server):
    name = server.create_function("memory", "python3.11", MemorySize=512)
    rid, _, msgs = invoke_and_get_stream(server, name, {"echo": 1})
    small = REPORT_RE.match(report_line_for(msgs, rid))
    rid, _, msgs = invoke_and_get_stream(server, name, {"alloc_mb": 150})
    big = REPORT_RE.match(report_line_for(msgs, rid))
    assert small["memory"] == big["memory"] == "512"
    assert 1 <= int(small["used"]) < 100, small.group(0)
    assert 150 <= int(big["used"]) < 512, big.group(0)


def test_each_environment_has_its_own_log_stream(server):
    name = server.create_function("streams", PLATFORM_RUNTIME, Timeout=10)
    clients = [server.client("lambda") for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(
            lambda c: server.invoke(name, {"sleep_ms": 700}, client=c), clients))
    used = {r.json()["log_stream_name"] for r in results}
    assert len(used) == 2

    def both_listed():
        listed = server.logs.describe_log_streams(
            logGroupName=f"/aws/lambda/{name}")["logStreams"]
        return used <= {s["logStreamName"] for s in listed}

    wait_until(both_listed, message="both streams in DescribeLogStreams")
    for stream in used:
        assert re.fullmatch(LOG_STREAM_RE, stream), stream
        msgs = [e["message"] for e in server.log_events(name, stream)]
        assert sum(m.startswith("START RequestId:") for m in msgs) == 1
        assert sum(m.startswith("REPORT RequestId:") for m in msgs) == 1


def test_describe_log_groups_lists_the_function_group(server, basic_functions):
    name = basic_functions("python3.11")
    server.invoke(name, {"echo": 1})
    groups = server.logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{name}")
    assert f"/aws/lambda/{name}" in [g["logGroupName"] for g in groups["logGroups"]]


def test_log_events_have_millisecond_timestamps_in_order(server):
    name = server.create_function("ts", PLATFORM_RUNTIME)
    before = int(time.time() * 1000)
    rid, stream, _ = invoke_and_get_stream(server, name, {"print": ["a", "b", "c"]})
    after = int(time.time() * 1000)
    events = server.log_events(name, stream)
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert all(before - 5000 <= t <= after + 5000 for t in stamps), (before, stamps, after)


def test_timed_out_invocation_is_logged(server):
    name = server.create_function("logtimeout", PLATFORM_RUNTIME, Timeout=1)
    inv = server.invoke(name, {"sleep_ms": 3000})
    assert inv.function_error == "Unhandled"
    msgs = server.wait_log(
        name, lambda ms: any(m.startswith("REPORT RequestId:") for m in ms))
    assert any("Task timed out after 1.00 seconds" in m for m in msgs), msgs


def test_logs_survive_a_server_restart(make_server):
    s = make_server()
    name = s.create_function("durable", PLATFORM_RUNTIME)
    marker = f"durable-marker-{time.time_ns()}"
    s.invoke(name, {"print": marker})
    before = s.wait_log(name, lambda ms: any(marker in m for m in ms)
                        and any(m.startswith("REPORT") for m in ms))
    s.restart()
    after = [e["message"] for e in s.log_events(name)]
    assert any(marker in m for m in after)
    assert [m for m in before if m.startswith(("START", "END", "REPORT"))] == \
        [m for m in after if m.startswith(("START", "END", "REPORT"))]
    # new invocations append to the same group after the restart
    s.invoke(name, {"print": marker + "-again"})
    s.wait_log(name, lambda ms: any(marker + "-again" in m for m in ms))


def test_thousands_of_lines_page_through_every_client_exactly_once(server):
    """A chatty function: FilterLogEvents (boto3's paginator and the AWS CLI, which pages by
    itself) and GetLogEvents (forward tokens until one repeats, which is how AWS says "the
    end", and backward from the newest page) return every line once, in order."""
    name = server.create_function("chatty", PLATFORM_RUNTIME, Timeout=30)
    marker = f"chatty-{time.time_ns()}"
    want = [f"{marker} line {i:05}" for i in range(5000)]
    inv = server.invoke(name, {"print": want})
    assert inv.function_error is None, inv.payload
    group = f"/aws/lambda/{name}"
    server.wait_log(name, lambda ms: any(m.startswith("REPORT RequestId:") for m in ms),
                    timeout=60)

    def ours(messages):
        return [strip_line(m) for m in messages if marker in m]

    pages = list(server.logs.get_paginator("filter_log_events").paginate(
        logGroupName=group, PaginationConfig={"PageSize": 700}))
    assert len(pages) >= 5000 // 700
    assert all(len(p["events"]) <= 700 for p in pages)
    assert ours(e["message"] for p in pages for e in p["events"]) == want

    # The filter applies while paging: only matching lines, still all of them.
    pages = list(server.logs.get_paginator("filter_log_events").paginate(
        logGroupName=group, filterPattern=f'"{marker} line 04"',
        PaginationConfig={"PageSize": 99}))
    assert ours(e["message"] for p in pages for e in p["events"]) == \
        [w for w in want if " line 04" in w]

    rc, out, err = server.aws("logs", "filter-log-events", "--log-group-name", group,
                              "--filter-pattern", f'"{marker}"', "--page-size", "450")
    assert rc == 0, err
    assert ours(e["message"] for e in json.loads(out)["events"]) == want

    (stream,) = [s["logStreamName"] for s in
                 server.logs.describe_log_streams(logGroupName=group)["logStreams"]]
    kw = dict(logGroupName=group, logStreamName=stream, limit=600)
    forward, token, calls = [], None, 0
    while True:
        page = server.logs.get_log_events(
            startFromHead=True, **kw, **({"nextToken": token} if token else {}))
        calls += 1
        assert len(page["events"]) <= 600
        forward += [e["message"] for e in page["events"]]
        if page["nextForwardToken"] == token:
            assert not page["events"]
            break
        token = page["nextForwardToken"]
    assert calls > 5000 // 600
    assert ours(forward) == want

    # Without startFromHead: the newest page first (it ends with the REPORT line), then
    # backward tokens until one repeats.
    page = server.logs.get_log_events(**kw)
    assert page["events"][-1]["message"].startswith("REPORT RequestId:")
    backward, token = [], None
    while True:
        page = server.logs.get_log_events(**kw, **({"nextToken": token} if token else {}))
        backward = [e["message"] for e in page["events"]] + backward
        if page["nextBackwardToken"] == token:
            break
        token = page["nextBackwardToken"]
    assert backward == forward
