"""Fixtures: a fake Runtime API per test and a launcher for the runtime bootstraps.

Only /usr/bin/python3 and /usr/bin/node are used (never a pyenv shim), started
exactly as the platform starts them, with a clean Lambda-style environment.
"""

import os
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fake_runtime_api import FakeRuntimeAPI  # noqa: E402

RUNTIMES_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
NODE = "/usr/bin/node"
PY_BOOTSTRAP = os.path.join(RUNTIMES_DIR, "python", "bootstrap.py")
NODE_BOOTSTRAP = os.path.join(RUNTIMES_DIR, "node", "bootstrap.js")

FUNCTION_NAME = "test-fn"


def command(runtime, extra_args=()):
    if runtime == "python":
        return [PYTHON, "-S", "-B", *extra_args, PY_BOOTSTRAP]
    return [NODE, *extra_args, NODE_BOOTSTRAP]


def lambda_env(api_address, handler, task_root, extra=None):
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_RUNTIME_API": api_address,
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(task_root),
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + FUNCTION_NAME,
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/25/[$LATEST]0123456789abcdef0123456789abcdef",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.update(extra or {})
    return env


def write_files(root, files):
    for rel, text in files.items():
        path = os.path.join(str(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))


class Runtime:
    """One runtime process attached to its own fake Runtime API."""

    def __init__(self, runtime, handler, files, task_root, env=None, extra_args=()):
        self.api = FakeRuntimeAPI()
        self.task_root = task_root
        write_files(task_root, files)
        self.proc = subprocess.Popen(
            command(runtime, extra_args), cwd=str(task_root),
            env=lambda_env(self.api.address, handler, task_root, env),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.api.attach(self.proc)

    def invoke(self, event=None, **kw):
        """Queue an event and wait for the runtime's /response or /error."""
        return self.api.wait_result(self.api.push(event, **kw))

    def wait_exit(self, timeout=10):
        return self.proc.wait(timeout)

    @property
    def stdout(self):
        return self.api.capture.stdout

    @property
    def stderr(self):
        return self.api.capture.stderr

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.api.stop()


@pytest.fixture
def start(tmp_path):
    """start(runtime, handler, files, env=None) -> Runtime; everything is torn down after the test."""
    started = []

    def _start(runtime, handler, files, env=None, extra_args=()):
        root = tmp_path / f"task{len(started)}"
        root.mkdir()
        rt = Runtime(runtime, handler, files, root, env, extra_args)
        started.append(rt)
        return rt

    yield _start
    for rt in started:
        rt.close()
    for rt in started:
        assert rt.api.protocol_errors == [], rt.api.protocol_errors
