"""Idle polling (docs/decisions/0011): as invocations start and end, and briefly after, the
server asks idle CPUs to poll through the kernel's CPU latency request (/dev/cpu_dma_latency), and
lifts the request when invocations stop. Reading /dev/cpu_dma_latency gives the machine's
current aggregate of all such requests (microseconds), which is what these tests watch."""

from __future__ import annotations

import os
import struct
import threading
import time

import pytest

from helpers import wait_until, zip_files

DEVICE = "/dev/cpu_dma_latency"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(DEVICE),
    reason="the CPU latency request needs root and /dev/cpu_dma_latency",
)

NOOP = """
def handler(event, context):
    return {}
"""


def aggregate_latency_us() -> int:
    """The machine's CPU latency constraint now: 0 while some process asks CPUs to poll."""
    with open(DEVICE, "rb") as f:
        return struct.unpack("i", f.read(4))[0]


def unconstrained_or_skip():
    """Waits for no process to ask CPUs to poll (other servers of the suite lift their
    requests within milliseconds of their last invocation); skips if one keeps asking."""
    try:
        wait_until(lambda: aggregate_latency_us() > 0, timeout=5, message="no constraint")
    except AssertionError:
        pytest.skip("another process keeps a CPU latency request of 0 µs")


def constraints_during_invocations(server, name) -> list[int]:
    """The constraint sampled every few milliseconds while one client invokes `name` over
    and over for two seconds."""
    stop = threading.Event()
    errors = []

    def invoke():
        while not stop.is_set():
            inv = server.invoke(name, {})
            if inv.function_error is not None:
                errors.append(inv.payload)

    t = threading.Thread(target=invoke)
    t.start()
    samples = []
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            samples.append(aggregate_latency_us())
            time.sleep(0.005)
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    return samples


def samples_from_a_warm_function(make_server, mode: str):
    """A server with `--idle-poll mode` and a warm no-op function, idle until no process asks
    for polling; then the constraint sampled while the function is invoked back to back."""
    server = make_server(extra_args=("--idle-poll", mode))
    name = server.create_function(f"idlepoll{mode}", "python3.11",
                                  zip_files({"app.py": NOOP}), "app.handler", Timeout=30)
    assert server.invoke(name, {}).function_error is None
    unconstrained_or_skip()  # lifted once invocations stop
    return server, constraints_during_invocations(server, name)


def test_idle_polling_is_requested_while_invocations_run_and_lifted_after(make_server):
    _, samples = samples_from_a_warm_function(make_server, "on")
    assert 0 in samples, f"never asked to poll: {sorted(set(samples))}"
    wait_until(lambda: aggregate_latency_us() > 0, timeout=10,
               message="the request to be lifted again")


def test_idle_polling_off_requests_nothing(make_server):
    server, samples = samples_from_a_warm_function(make_server, "off")
    assert 0 not in samples
    pid = server.proc.pid
    held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert DEVICE not in held


def test_an_unknown_idle_poll_value_is_refused_at_start(make_server):
    with pytest.raises(RuntimeError, match="invalid idle-poll value 'always'"):
        make_server(extra_args=("--idle-poll", "always"))
