"""Functions, configuration and code survive kill -9 and a restart on the same data dir."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from helpers import function_processes, node_zip, python_zip, rust_zip, sha256_b64, wait_until

STABLE = ("FunctionName", "FunctionArn", "Runtime", "Role", "Handler", "CodeSize", "CodeSha256",
          "Description", "Timeout", "MemorySize", "LastModified", "Version", "RevisionId",
          "Environment", "PackageType", "Architectures")


@pytest.fixture(scope="module")
def restarted(make_module_server):
    """A server with three functions (invoked once each), then killed -9 and restarted."""
    s = make_module_server()
    zips = {"python3.11": python_zip(), "nodejs20.x": node_zip(), "provided.al2023": rust_zip()}
    names = {}
    for runtime, zip_bytes in zips.items():
        names[runtime] = s.create_function(
            "persist", runtime, zip_bytes, MemorySize=192, Timeout=11,
            Description=f"persisted {runtime}",
            Environment={"Variables": {"MY_VAR": runtime}},
        )
        assert s.invoke(names[runtime], {"echo": 1}).function_error is None
    updated = names["python3.11"]
    s.lam.update_function_configuration(FunctionName=updated, Description="updated once")
    s.wait_active(updated)
    before = {rt: s.lam.get_function_configuration(FunctionName=n) for rt, n in names.items()}
    s.restart()
    return s, names, zips, before


def test_functions_and_their_configuration_survive_kill_9(restarted):
    s, names, zips, before = restarted
    for runtime, name in names.items():
        after = s.lam.get_function_configuration(FunctionName=name)
        for key in STABLE:
            assert after.get(key) == before[runtime].get(key), (runtime, key)
        assert after["CodeSha256"] == sha256_b64(zips[runtime])
        assert after["State"] == "Active"
    listed = {f["FunctionName"] for f in s.lam.list_functions()["Functions"]}
    assert set(names.values()) <= listed


def test_code_survives_kill_9(restarted):
    s, names, zips, _ = restarted
    for runtime, name in names.items():
        location = s.lam.get_function(FunctionName=name)["Code"]["Location"]
        with urllib.request.urlopen(location, timeout=30) as r:
            assert r.read() == zips[runtime], runtime


def test_invoke_works_after_restart(restarted):
    s, names, _, _ = restarted
    for runtime, name in names.items():
        inv = s.invoke(name, {"echo": runtime})
        assert inv.function_error is None, (runtime, inv.payload)
        body = inv.json()
        assert body["echo"] == runtime
        assert int(body["memory_limit_in_mb"]) == 192
        env = s.invoke(name, {"env": True}).json()
        assert env["MY_VAR"] == runtime


def test_updates_after_restart_honour_the_revision_id(restarted):
    s, names, _, before = restarted
    name = names["nodejs20.x"]
    revision = before["nodejs20.x"]["RevisionId"]
    cfg = s.lam.update_function_configuration(FunctionName=name, Timeout=12,
                                              RevisionId=revision)
    assert cfg["Timeout"] == 12 and cfg["RevisionId"] != revision


def test_a_function_created_after_restart_works(restarted):
    s, _, _, _ = restarted
    name = s.create_function("afterwards", "python3.11")
    assert s.invoke(name, {"echo": "new"}).json()["echo"] == "new"


def test_environments_do_not_outlive_a_killed_server(make_server):
    s = make_server()
    names = [s.create_function("orphan", rt) for rt in ("python3.11", "nodejs20.x")]
    for name in names:
        assert s.invoke(name, {"echo": 1}).function_error is None
        assert function_processes(name), "the warm environment is running"
    s.crash()
    for name in names:
        wait_until(lambda: not function_processes(name), timeout=10,
                   message=f"environments of {name} to exit after the server died")


def test_restart_after_a_clean_stop_keeps_everything(make_server):
    s = make_server()
    name = s.create_function("clean", "python3.11")
    assert s.invoke(name, {"echo": 1}).function_error is None
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(timeout=15)
    wait_until(lambda: not function_processes(name), timeout=10,
               message="environments to stop with the server")
    s.start()
    assert s.invoke(name, {"echo": "x"}).json()["echo"] == "x"
