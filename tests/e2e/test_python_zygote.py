"""Python runtimes forked from the zygote (the jail's default, docs/decisions/0010) behave as a
freshly exec'd interpreter: the same command line and environment in /proc, the function's
own interpreter variables and library path, no state shared between environments, and a
zygote that dies takes nothing with it. Under the process backend the same tests check the
exec'd interpreter, which is the reference."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from helpers import SANDBOX, all_pids, wait_until, zip_files

PROBE = """
import ctypes, os, random, sys, time

def handler(event, context):
    if "exit" in event:
        sys.stdout.flush()
        os._exit(event["exit"])
    if event.get("lib"):
        ctypes.CDLL(event["lib"])
        return {"loaded": event["lib"]}
    time.sleep(event.get("sleep", 0))
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read().decode().split("\\0")[:-1]
    with open("/proc/self/environ", "rb") as f:
        environ = f.read().decode().split("\\0")[:-1]
    return {
        "cmdline": cmdline,
        "environ": environ,
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "main": sys.modules["__main__"].__file__,
        "hash": hash("nimbus"),
        "ppid": os.getppid(),
        "random": random.getrandbits(64),
    }
"""


def probe_zip(extra: dict | None = None) -> bytes:
    return zip_files({"app.py": PROBE, **(extra or {})})


def create_probe(server, prefix, extra=None, **kw):
    return server.create_function(prefix, "python3.11", probe_zip(extra), "app.handler",
                                  Timeout=30, **kw)


def probe(server, name, **event):
    inv = server.invoke(name, event)
    assert inv.function_error is None, inv.payload
    return inv.json()


def test_python_runtime_shows_the_command_line_and_environment_of_an_exec_d_interpreter(
        server):
    name = create_probe(server, "zycmd", Environment={"Variables": {"GREETING": "hello"}})
    got = probe(server, name)
    assert got["cmdline"][0] == "/usr/bin/python3"
    assert got["cmdline"][1:3] == ["-S", "-B"]
    assert got["cmdline"][3].endswith("/bootstrap.py"), got["cmdline"]
    assert got["argv"] == got["cmdline"][3:] and got["main"] == got["cmdline"][3]
    assert got["orig_argv"] == got["cmdline"]
    environ = dict(e.split("=", 1) for e in got["environ"])
    assert environ["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert environ["GREETING"] == "hello"
    if SANDBOX == "jail":
        assert got["cmdline"][3] == "/var/runtime/bootstrap.py", "no host path shows"
        assert environ["PYTHONPATH"] == "/var/runtime"


def fresh_hash(seed: str) -> int:
    """hash("nimbus") in an interpreter started with PYTHONHASHSEED=seed."""
    return int(subprocess.run(
        ["/usr/bin/python3", "-S", "-B", "-c", "print(hash('nimbus'))"],
        env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True,
    ).stdout)


def test_python_hash_seed_chosen_by_the_function_applies_from_the_start(server):
    """PYTHONHASHSEED is read once, when the interpreter starts: a function that sets it gets
    the hashes of an interpreter started with it (a zygote of its own, not the default one)."""
    expected = fresh_hash("1234")
    seeded = create_probe(server, "zyseed",
                          Environment={"Variables": {"PYTHONHASHSEED": "1234"}})
    assert probe(server, seeded)["hash"] == expected
    unseeded = create_probe(server, "zynoseed")
    assert probe(server, unseeded)["hash"] != expected


def test_native_library_in_the_functions_lib_directory_is_found_through_ld_library_path(
        server):
    """The dynamic loader reads LD_LIBRARY_PATH (which holds /var/task/lib) once, at exec: a
    function that ships a library there gets an interpreter whose loader searches it."""
    libz = sorted(glob.glob("/lib/x86_64-linux-gnu/libz.so.1*")
                  + glob.glob("/usr/lib/x86_64-linux-gnu/libz.so.1*"))
    if not libz:
        pytest.skip("no libz on this host to ship as the function's library")
    with open(libz[0], "rb") as f:
        library = f.read()
    name = create_probe(server, "zylib", {"lib/libnimbusprobe.so": library})
    assert probe(server, name, lib="libnimbusprobe.so") == {"loaded": "libnimbusprobe.so"}


@pytest.mark.parametrize("status", [0, 7])
def test_python_runtime_exit_status_reaches_the_invoker(server, status):
    name = create_probe(server, f"zyexit{status}")
    inv = server.invoke(name, {"exit": status})
    assert inv.function_error == "Unhandled"
    assert inv.json()["errorType"] == "Runtime.ExitError"
    # Lambda's wording: a clean exit gives no reason.
    reason = f"exit status {status}" if status else "Runtime exited without providing a reason"
    assert reason in inv.json()["errorMessage"], inv.json()
    assert probe(server, name)["cmdline"][1:3] == ["-S", "-B"], "and the next one starts"


def test_concurrent_python_environments_do_not_share_random_state(server):
    name = create_probe(server, "zyrand")
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: probe(server, name, sleep=1.5), range(2))
    assert stream_of(a) != stream_of(b), "two environments"
    assert a["random"] != b["random"]


def stream_of(probed: dict) -> str:
    """The environment's log stream: one per environment (pids repeat across jails)."""
    prefix = "AWS_LAMBDA_LOG_STREAM_NAME="
    (stream,) = [e[len(prefix):] for e in probed["environ"] if e.startswith(prefix)]
    return stream


def zygotes_of(server) -> set[int]:
    """The server's Python zygotes (`python3 -S -B /dev/fd/4`, children of the server in its
    PID namespace; the runtimes they fork are the server's children too, in their jails')."""
    found = set()
    server_pid_ns = os.readlink(f"/proc/{server.proc.pid}/ns/pid")
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
            pid_ns = os.readlink(f"/proc/{pid}/ns/pid")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.proc.pid and pid_ns == server_pid_ns and cmdline[:4] == [
                b"/usr/bin/python3", b"-S", b"-B", b"/dev/fd/4"]:
            found.add(pid)
    return found


@pytest.mark.skipif(SANDBOX != "jail", reason="zygotes serve the jail only")
def test_a_killed_python_zygote_is_replaced_and_running_environments_keep_serving(
        make_server):
    srv = make_server()
    first = create_probe(srv, "zykill")
    warm = probe(srv, first)
    (zygote,) = zygotes_of(srv)
    os.kill(zygote, signal.SIGKILL)
    wait_until(lambda: zygote not in zygotes_of(srv), 10, 0.05, "the zygote to be gone")

    assert stream_of(probe(srv, first)) == stream_of(warm), "the warm one outlived its zygote"

    second = create_probe(srv, "zykill2")
    assert probe(srv, second)["cmdline"][3] == "/var/runtime/bootstrap.py"
    replacement = wait_until(lambda: zygotes_of(srv) or None, 10, 0.05, "a new zygote")
    assert zygote not in replacement
    # The environment whose zygote died still reports its runtime's end.
    ended = srv.invoke(first, {"exit": 3})
    assert ended.function_error == "Unhandled"
    assert ended.json()["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in ended.json()["errorMessage"]
    assert stream_of(probe(srv, first)) != stream_of(warm), "a new environment"


@pytest.mark.skipif(SANDBOX != "jail", reason="zygotes serve the jail only")
def test_a_fifth_start_up_environment_retires_the_idlest_zygote_without_ending_its_runtimes(
        make_server):
    """At most four zygotes run. A fifth distinct start-up environment retires the one that
    forked least recently — no function can keep others on the exec path for good. Its
    runtimes are the server's children, not its own: the retired zygote exits at once and
    its warm environment keeps serving."""
    srv = make_server()
    started = []
    for seed in ("11", "12", "13", "14", "15"):
        name = create_probe(srv, f"zyevict{seed}",
                            Environment={"Variables": {"PYTHONHASHSEED": seed}})
        got = probe(srv, name)
        # Forked: its parent (the server) is outside the jail's PID namespace (an exec'd
        # runtime's parent is the jail's init, 1).
        assert got["ppid"] == 0, f"seed {seed} was not started by a zygote"
        assert got["hash"] == fresh_hash(seed)
        started.append((name, got))
    first, warm = started[0]
    wait_until(lambda: len(zygotes_of(srv)) == 4, 10, 0.05, "the retired zygote to exit")
    assert stream_of(probe(srv, first)) == stream_of(warm), "outlived its zygote's retirement"


@pytest.mark.skipif(SANDBOX != "jail",
                    reason="the process sandbox runs functions on the host by design")
def test_a_functions_interpreter_variables_never_import_host_code_as_root(server, tmp_path):
    """A zygote is root in the host's namespaces, and its interpreter acts on its start-up
    variables before a line of ours runs. A function whose PYTHONPATH and PYTHONWARNINGS would
    make it import a module from a host directory takes the exec path, inside its jail, where
    that directory does not exist."""
    marker = tmp_path / "imported-on-the-host"
    (tmp_path / "nimbusevil.py").write_text(
        f"open({str(marker)!r}, 'w').write('as root')\nclass Category(Warning):\n    pass\n")
    os.chmod(tmp_path, 0o755)
    name = create_probe(server, "zyhostile", Environment={"Variables": {
        "PYTHONPATH": str(tmp_path), "PYTHONWARNINGS": "ignore::nimbusevil.Category"}})
    got = probe(server, name)
    assert not marker.exists(), "a module of the function's choosing ran on the host"
    assert got["ppid"] == 1, "exec'd by the jail's init, not forked by a zygote"
