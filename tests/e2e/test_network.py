"""Outbound network from functions: on by default, off for a function attached to subnets.

Nimbus has no VPCs: a function with `VpcConfig.SubnetIds` gets no outbound network, as a
Lambda function in a private subnet without a NAT gateway; empty lists detach it again. The
target is a listener this test opens on this machine's own (non-loopback) address — the
function cannot reach the host's loopback at all (its Runtime API is the only thing on its
own), so the machine's address is how egress is observed. No traffic leaves the machine.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading

import pytest

from helpers import wait_until, zip_files

PROBE = b'''
import socket
def handler(event, context):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((event["host"], event["port"]))
        return {"reached": s.recv(16).decode()}
    except OSError as e:
        return {"error": type(e).__name__, "errno": e.errno}
    finally:
        s.close()
'''


def host_address() -> str:
    """This machine's first non-loopback IPv4 address."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout
    for addr in out.split():
        if "." in addr and not addr.startswith("127."):
            return addr
    pytest.fail(f"no non-loopback IPv4 address on this machine: {out!r}")


@contextlib.contextmanager
def greeting_listener(addr: str):
    """A listener on `addr` that answers every connection with 'hello' (bounded: it stops
    with the test)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hello")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join(timeout=2)
        srv.close()


@pytest.fixture(scope="module")
def jailed(make_module_server):
    return make_module_server(sandbox="jail")


def test_functions_reach_the_network_by_default_and_not_once_attached_to_subnets(jailed):
    addr = host_address()
    name = jailed.create_function("net", "python3.11", zip_files({"app.py": PROBE}),
                                  handler="app.handler")
    with greeting_listener(addr) as port:
        event = {"host": addr, "port": port}
        assert jailed.invoke(name, event).json() == {"reached": "hello"}

        # Attach it to subnets with the AWS CLI: no outbound network any more.
        rc, out, err = jailed.aws(
            "lambda", "update-function-configuration", "--function-name", name,
            "--vpc-config", "SubnetIds=subnet-0123,SecurityGroupIds=sg-0123",
        )
        assert rc == 0, err
        cfg = jailed.lam.get_function_configuration(FunctionName=name)
        assert cfg["VpcConfig"]["SubnetIds"] == ["subnet-0123"]
        cut_off = jailed.invoke(name, event).json()
        assert "reached" not in cut_off, cut_off
        assert cut_off["error"] in {"OSError", "TimeoutError", "ConnectionRefusedError"}, cut_off

        # Detach it (empty lists, as on Lambda): the network is back.
        jailed.lam.update_function_configuration(
            FunctionName=name, VpcConfig={"SubnetIds": [], "SecurityGroupIds": []})
        wait_until(lambda: "VpcConfig" not in jailed.lam.get_function_configuration(
            FunctionName=name), 10, 0.1, "the VPC configuration to be gone")
        assert jailed.invoke(name, event).json() == {"reached": "hello"}


def test_a_function_created_in_subnets_has_no_outbound_network(jailed):
    addr = host_address()
    name = jailed.create_function("netoff", "python3.11", zip_files({"app.py": PROBE}),
                                  handler="app.handler",
                                  VpcConfig={"SubnetIds": ["subnet-1"], "SecurityGroupIds": []})
    with greeting_listener(addr) as port:
        result = jailed.invoke(name, {"host": addr, "port": port}).json()
    assert "reached" not in result, result
