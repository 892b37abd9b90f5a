"""Outbound network from functions: on by default, off for a function attached to subnets.

Nimbus has no VPCs: a function with `VpcConfig.SubnetIds` gets no outbound network, as a
Lambda function in a private subnet without a NAT gateway; empty lists detach it again. The
target is a listener this test opens on this machine's own (non-loopback) address — the
function cannot reach the host's loopback at all (its Runtime API is the only thing on its
own), so the machine's address is how egress is observed. No traffic leaves the machine.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import threading

import pytest

from helpers import _proc_stat, all_pids, wait_until, zip_files

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


NODE_PROBE = b'''
const net = require("net");
exports.handler = (event) => new Promise((resolve) => {
  const s = net.connect({ host: event.host, port: event.port });
  s.setTimeout(3000, () => { s.destroy(); resolve({ error: "timeout" }); });
  s.on("data", (d) => { s.destroy(); resolve({ reached: d.toString() }); });
  s.on("error", (e) => resolve({ error: e.code }));
});
'''

LOOPBACK_ONLY = b'''
import socket
def handler(event, context):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=3)
    c.sendall(b"x")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", ("127.0.0.1", 9))
    with open("/proc/net/dev") as f:
        return {"devices": [line.split(":")[0].strip() for line in f if ":" in line]}
'''


def slirp_processes(server) -> int:
    """slirp4netns processes the server started (one per environment with egress)."""
    count = 0
    for pid in all_pids():
        st = _proc_stat(pid)
        if st is None or st[0] != server.proc.pid:
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "slirp4netns":
                    count += 1
        except OSError:
            pass
    return count


def create_probes(srv):
    """A loopback-only Python function, and a Python (zygote) and a Node (exec'd) function
    that connect to an address outside the jail: the two start paths."""
    quiet = srv.create_function("quiet", "python3.11", zip_files({"app.py": LOOPBACK_ONLY}),
                                handler="app.handler")
    py = srv.create_function("pyprobe", "python3.11", zip_files({"app.py": PROBE}),
                             handler="app.handler")
    node = srv.create_function("nodeprobe", "nodejs20.x", zip_files({"index.js": NODE_PROBE}),
                               handler="index.handler")
    return quiet, py, node


def test_outbound_networking_is_attached_on_a_functions_first_outside_connection(make_server):
    """Egress on first use (decision 0012): an environment gets its slirp4netns only when it
    first sends to an address outside the jail, and that first connection succeeds. Python
    (forked from the zygote) and Node (exec'd by the jailer) take the two start paths."""
    srv = make_server(sandbox="jail")
    addr = host_address()
    quiet, py, node = create_probes(srv)
    result = srv.invoke(quiet, {}).json()
    assert result["devices"] == ["lo"], result
    assert slirp_processes(srv) == 0

    with greeting_listener(addr) as port:
        event = {"host": addr, "port": port}
        assert srv.invoke(py, event).json() == {"reached": "hello"}
        assert slirp_processes(srv) == 1
        assert srv.invoke(node, event).json() == {"reached": "hello"}
        assert slirp_processes(srv) == 2
        # Warm: the same environments, no more slirp4netns.
        assert srv.invoke(py, event).json() == {"reached": "hello"}
        assert srv.invoke(node, event).json() == {"reached": "hello"}
        assert slirp_processes(srv) == 2
    assert srv.invoke(quiet, {}).json()["devices"] == ["lo"]


def test_a_jail_that_cannot_install_the_trigger_gets_egress_before_its_runtime_runs(
        make_server):
    """The fallback: with RLIMIT_NOFILE below the descriptor the trigger lets `sendmsg`
    through on, neither a forked Python runtime nor the jail's init (Node) can keep its
    socket to the server there, so they start the runtime without the trigger and the server
    attaches egress right after the start instead: the function still reaches the outside."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        srv = make_server(sandbox="jail")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    addr = host_address()
    quiet, py, node = create_probes(srv)
    assert "tap0" in srv.invoke(quiet, {}).json()["devices"]
    with greeting_listener(addr) as port:
        event = {"host": addr, "port": port}
        assert srv.invoke(py, event).json() == {"reached": "hello"}
        assert srv.invoke(node, event).json() == {"reached": "hello"}
