"""Test function for the end-to-end suite (runtime python3.11, handler app.handler).

The event chooses the behaviour, with the same protocol as the Node and Rust test functions:
  {"echo": X}        -> X plus the context fields, the pid and an invocation counter
  {"sleep_ms": N}    -> sleeps N ms
  {"error": "msg"}   -> raises TestError(msg)
  {"exit": code}     -> sys.exit(code) in the middle of the invocation
  {"print": "line" or [lines], "stderr": "line"} -> writes the lines, returns them
  {"env": true}      -> the process environment
  {"spawn_sleep_ms": N} -> starts a child process, then sleeps N ms (returns the child's pid)
  {"alloc_mb": N}    -> touches N MiB of memory
  {"response_mb": N} -> returns a string of N MiB
Other handlers: app.hello (returns "Hello, <name>!").
"""

import os
import subprocess
import sys
import time

COUNT = 0
INIT_PID = os.getpid()


class TestError(Exception):
    pass


def _plain(value):
    """A JSON-able copy of a context sub-object (plain object, __slots__ class or dict)."""
    if value is None or isinstance(value, (dict, list, str, int, float, bool)):
        return value
    slots = getattr(type(value), "__slots__", None)
    if slots:
        return {s: _plain(getattr(value, s, None)) for s in slots}
    return {k: _plain(v) for k, v in vars(value).items()}


def _client_context(ctx):
    cc = getattr(ctx, "client_context", None)
    if cc is None or isinstance(cc, dict):
        return cc
    return {attr: _plain(getattr(cc, attr, None)) for attr in ("client", "custom", "env")}


def handler(event, context):
    global COUNT
    COUNT += 1
    if not isinstance(event, dict):
        return event
    if "echo" in event:
        return {
            "echo": event["echo"],
            "request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_time_ms": context.get_remaining_time_in_millis(),
            "client_context": _client_context(context),
            "pid": os.getpid(),
            "count": COUNT,
        }
    if "sleep_ms" in event:
        time.sleep(event["sleep_ms"] / 1000.0)
        return {
            "slept_ms": event["sleep_ms"],
            "pid": os.getpid(),
            "log_stream_name": context.log_stream_name,
        }
    if "error" in event:
        raise TestError(event["error"])
    if "exit" in event:
        sys.exit(event["exit"])
    if "print" in event or "stderr" in event:
        lines = event.get("print", [])
        if isinstance(lines, str):
            lines = [lines]
        for line in lines:
            print(line, flush=True)
        if "stderr" in event:
            print(event["stderr"], file=sys.stderr, flush=True)
        return {"printed": lines}
    if "env" in event:
        return dict(os.environ)
    if "spawn_sleep_ms" in event:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        time.sleep(event["spawn_sleep_ms"] / 1000.0)
        return {"child_pid": child.pid, "pid": os.getpid()}
    if "response_mb" in event:
        return "r" * (event["response_mb"] << 20)
    if "alloc_mb" in event:
        block = b"x" * (event["alloc_mb"] << 20)
        return {"allocated": len(block)}
    return event


def hello(event, context):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return "Hello, %s!" % name
