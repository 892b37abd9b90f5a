"""The `nimbus` command-line client: deploy, invoke, list, delete, logs (--follow)."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from helpers import FUNCTIONS, NIMBUS_BIN, error_code, wait_until


def json_objects(text: str):
    """Every top-level JSON value found in text (one per line or the whole text)."""
    found = []
    try:
        found.append(json.loads(text))
    except ValueError:
        pass
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("{", "[", '"')):
            try:
                found.append(json.loads(line))
            except ValueError:
                pass
    return found


def write_python(tmp_path, version: int):
    d = tmp_path / f"v{version}"
    d.mkdir()
    (d / "app.py").write_text(
        "import os\n\ndef handler(event, context):\n"
        f"    return {{'version': {version}, 'greeting': os.environ.get('GREETING')}}\n"
    )
    return d


def test_cli_deploy_creates_a_function_from_a_directory(server):
    name = server.name("clideploy")
    rc, out, err = server.nimbus(
        "deploy", name, "--runtime", "python3.11", "--handler", "app.handler",
        "--memory", "256", "--timeout", "5", "--env", "FIRST=1", "--env", "SECOND=two words",
        str(FUNCTIONS / "python" / "basic"),
    )
    assert rc == 0, err
    cfg = server.wait_active(name)
    assert cfg["Runtime"] == "python3.11"
    assert cfg["Handler"] == "app.handler"
    assert (cfg["MemorySize"], cfg["Timeout"]) == (256, 5)
    assert cfg["Environment"]["Variables"] == {"FIRST": "1", "SECOND": "two words"}
    inv = server.invoke(name, {"echo": "deployed"})
    assert inv.json()["echo"] == "deployed"


def test_cli_deploy_updates_an_existing_function(server, tmp_path):
    name = server.name("cliupdate")
    rc, out, err = server.nimbus(
        "deploy", name, "--runtime", "python3.11", "--handler", "app.handler",
        "--env", "GREETING=hi", str(write_python(tmp_path, 1)),
    )
    assert rc == 0, err
    server.wait_active(name)
    first = server.lam.get_function_configuration(FunctionName=name)
    assert server.invoke(name, {}).json() == {"version": 1, "greeting": "hi"}

    rc, out, err = server.nimbus(
        "deploy", name, "--runtime", "python3.11", "--handler", "app.handler",
        "--memory", "384", "--env", "GREETING=hello", str(write_python(tmp_path, 2)),
    )
    assert rc == 0, err
    cfg = server.wait_active(name)
    assert cfg["CodeSha256"] != first["CodeSha256"]
    assert cfg["MemorySize"] == 384
    assert server.invoke(name, {}).json() == {"version": 2, "greeting": "hello"}


@pytest.fixture(scope="module")
def cli_function(server):
    return server.create_function("clifn", "python3.11")


def test_cli_invoke_prints_the_response_payload(server, cli_function):
    rc, out, err = server.nimbus("invoke", cli_function, "--payload", '{"echo": {"k": [1, 2]}}')
    assert rc == 0, err
    assert json.loads(out)["echo"] == {"k": [1, 2]}


def test_cli_invoke_without_payload(server, cli_function):
    rc, out, err = server.nimbus("invoke", cli_function)
    assert rc == 0, err
    assert json.loads(out) is not None or out.strip() == "null"


def test_cli_invoke_exits_1_on_a_function_error_and_prints_it(server, cli_function):
    rc, out, err = server.nimbus("invoke", cli_function, "--payload", '{"error": "cli failure"}')
    assert rc == 1, (out, err)
    errors = [o for o in json_objects(out) + json_objects(err)
              if isinstance(o, dict) and "errorMessage" in o]
    assert errors, f"no error JSON printed: stdout={out!r} stderr={err!r}"
    assert errors[0]["errorMessage"] == "cli failure"
    assert errors[0]["errorType"] == "TestError"


def test_cli_invoke_of_an_unknown_function_fails(server):
    rc, out, err = server.nimbus("invoke", server.name("nosuch"))
    assert rc != 0
    assert re.search(r"ResourceNotFound|not found", out + err, re.I), (out, err)


def test_cli_list_shows_functions(server, cli_function):
    rc, out, err = server.nimbus("list")
    assert rc == 0, err
    assert cli_function in out


def test_cli_delete_removes_the_function(server):
    name = server.create_function("clidelete", "python3.11")
    rc, out, err = server.nimbus("delete", name)
    assert rc == 0, err
    with pytest.raises(ClientError) as exc:
        server.lam.get_function(FunctionName=name)
    assert error_code(exc.value) == "ResourceNotFoundException"
    rc, out, err = server.nimbus("list")
    assert rc == 0 and name not in out
    rc, out, err = server.nimbus("delete", name)
    assert rc != 0, "deleting a missing function is an error"


def test_cli_logs_prints_the_function_log(server, cli_function):
    marker = f"cli-logs-marker-{time.time_ns()}"
    server.invoke(cli_function, {"print": marker})

    def logs_show_it():
        rc, out, err = server.nimbus("logs", cli_function)
        assert rc == 0, err
        return out if marker in out and "REPORT RequestId:" in out else None

    out = wait_until(logs_show_it, timeout=15, interval=0.3, message="nimbus logs output")
    assert "START RequestId:" in out and "END RequestId:" in out


def test_cli_logs_follow_streams_new_lines(server, cli_function):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not k.startswith("NIMBUS_")}
    env.update(NIMBUS_ENDPOINT=server.endpoint, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    proc = subprocess.Popen(
        [str(NIMBUS_BIN), "logs", cli_function, "--follow"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True).start()
    try:
        seen = []
        for round_ in range(3):
            marker = f"follow-marker-{round_}-{time.time_ns()}"
            server.invoke(cli_function, {"print": marker})
            deadline = time.monotonic() + 15
            while not any(marker in l for l in seen):
                assert proc.poll() is None, "nimbus logs --follow exited:\n" + "".join(seen)
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"{marker} never showed up:\n" + "".join(seen)
                try:
                    seen.append(lines.get(timeout=min(remaining, 0.5)))
                except queue.Empty:
                    pass
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


def test_cli_reads_credentials_from_the_data_dir(make_server, tmp_path):
    s = make_server(access_key=False)
    name = s.name("clicreds")
    flags = ["--endpoint-url", s.endpoint, "--data-dir", s.data_dir]
    rc, out, err = s.nimbus("deploy", name, "--runtime", "python3.11", "--handler",
                            "app.handler", *flags, str(write_python(tmp_path, 5)),
                            endpoint_env=False)
    assert rc == 0, err
    rc, out, err = s.nimbus("invoke", name, *flags, endpoint_env=False)
    assert rc == 0, err
    assert json.loads(out)["version"] == 5
    rc, out, err = s.nimbus("list", *flags, endpoint_env=False)
    assert rc == 0 and name in out, err


def test_cli_endpoint_url_flag(server, cli_function):
    rc, out, err = server.nimbus("list", "--endpoint-url", server.endpoint, endpoint_env=False,
                                 env={"AWS_ACCESS_KEY_ID": "testing",
                                      "AWS_SECRET_ACCESS_KEY": "testing"})
    assert rc == 0, err
    assert cli_function in out


def test_cli_with_wrong_credentials_fails(server):
    rc, out, err = server.nimbus("list", env={"AWS_SECRET_ACCESS_KEY": "wrong"})
    assert rc != 0
    assert re.search(r"InvalidSignature|403|signature", out + err, re.I), (out, err)
