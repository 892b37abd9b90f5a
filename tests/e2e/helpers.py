"""Shared helpers of the end-to-end suite: the server under test, clients, code packages,
process inspection and polling.

Everything here drives the real `nimbus` binary over HTTP, with boto3, the AWS CLI or raw
SigV4-signed requests; nothing talks to the server's internals.
"""

from __future__ import annotations

import atexit
import base64
import glob
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "tests" / "functions"
NIMBUS_BIN = Path(os.environ.get("NIMBUS_BIN", REPO / "target" / "debug" / "nimbus"))
RUST_FUNCTION_BIN = Path(
    os.environ.get("RUST_FUNCTION_BIN", REPO / "target" / "debug" / "rust-function")
)
SANDBOX = os.environ.get("NIMBUS_SANDBOX", "jail")
AWS_CLI = os.environ.get("AWS_CLI", "aws")

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lambda-role"
SERVER_SECRET_ENV = ("NIMBUS_TEST_SECRET", "hunter2")

RUNTIMES = ["python3.11", "nodejs20.x", "provided.al2023"]
HANDLERS = {
    "python3.11": "app.handler",
    "nodejs20.x": "index.handler",
    "provided.al2023": "bootstrap.handler",
    "provided.al2": "bootstrap.handler",
}

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
LOG_STREAM_RE = r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}"
LAST_MODIFIED_RE = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000"

# Processes the suite started (servers) are registered here so a failing test can show
# the server's log and the session can kill whatever is left.
LIVE_SERVERS: list["Server"] = []


@atexit.register
def _close_leftover_servers():  # a last resort if pytest dies before fixture teardown
    for server in list(LIVE_SERVERS):
        try:
            server.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------------------
# polling


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
):
    """Polls `predicate` until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------------------
# code packages


def zip_files(files: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """Builds a zip from {name: content | (content, mode)}; content is str or bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, value in files.items():
            mode = 0o644
            if isinstance(value, tuple):
                value, mode = value
            if isinstance(value, str):
                value = value.encode()
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = compression
            zf.writestr(info, value)
    return buf.getvalue()


def dir_files(path: Path) -> dict:
    """{relative name: (bytes, mode)} for every file under path (no caches)."""
    files = {}
    for p in sorted(path.rglob("*")):
        if p.is_dir() or "__pycache__" in p.parts or p.suffix == ".pyc":
            continue
        files[p.relative_to(path).as_posix()] = (p.read_bytes(), p.stat().st_mode & 0o777)
    return files


def zip_dir(path: Path, extra: dict | None = None) -> bytes:
    files = dir_files(path)
    files.update(extra or {})
    return zip_files(files)


def python_zip(fixture: str = "basic", extra: dict | None = None) -> bytes:
    return zip_dir(FUNCTIONS / "python" / fixture, extra)


def node_zip(fixture: str = "basic", extra: dict | None = None) -> bytes:
    return zip_dir(FUNCTIONS / "node" / fixture, extra)


_rust_built = False


def rust_bootstrap() -> bytes:
    """The lambda_runtime test function's binary (built on first use if missing), with its
    debug info stripped when `strip` is available (41 MB -> a few MB to upload and unpack)."""
    global _rust_built
    if not RUST_FUNCTION_BIN.exists() and not _rust_built:
        subprocess.run(
            ["cargo", "build", "-p", "rust-function"], cwd=REPO, check=True, timeout=900
        )
        _rust_built = True
    strip = shutil.which("strip")
    if not strip:
        return RUST_FUNCTION_BIN.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        stripped = Path(tmp) / "bootstrap"
        subprocess.run([strip, "--strip-debug", "-o", str(stripped), str(RUST_FUNCTION_BIN)],
                       check=True, timeout=120)
        return stripped.read_bytes()


@lru_cache(maxsize=None)
def rust_zip() -> bytes:
    return zip_files({"bootstrap": (rust_bootstrap(), 0o755)})


def code_zip(runtime: str) -> bytes:
    if runtime.startswith("python"):
        return python_zip()
    if runtime.startswith("nodejs"):
        return node_zip()
    return rust_zip()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# --------------------------------------------------------------------------------------
# processes


def _proc_stat(pid: int):
    """(ppid, pgid, session) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2 :].split()
    # state ppid pgrp session ...
    if rest[0] == "Z":
        return None
    return int(rest[1]), int(rest[2]), int(rest[3])


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        st = _proc_stat(pid)
        if st:
            children.setdefault(st[0], []).append(pid)
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def session_members(sid: int) -> set[int]:
    return {pid for pid in all_pids() if (st := _proc_stat(pid)) and st[2] == sid}


def function_processes(name: str) -> set[int]:
    """Live processes whose environment says they run function `name` (any sandbox)."""
    marker = f"AWS_LAMBDA_FUNCTION_NAME={name}".encode()
    found = set()
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if marker in env and _proc_stat(pid) is not None:
            found.add(pid)
    return found


def pid_alive(pid: int) -> bool:
    return _proc_stat(pid) is not None


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        st = _proc_stat(pid)
        if st is None:
            continue
        for fn, arg in ((os.killpg, st[1]), (os.kill, pid)):
            try:
                if fn is os.killpg and arg == os.getpgrp():
                    continue
                fn(arg, signal.SIGKILL)
            except OSError:
                pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------
# raw HTTP


@dataclass
class RawResponse:
    status: int
    headers: dict  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def error_type(self) -> str | None:
        return self.headers.get("x-amzn-errortype")

    def error_message(self) -> str | None:
        try:
            data = self.json()
        except ValueError:
            return None
        return data.get("message") or data.get("Message")


def http_request(
    endpoint: str, method: str, path: str, body: bytes = b"", headers: dict | None = None,
    timeout: float = 120,
) -> RawResponse:
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return RawResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# the server under test


def client_config(**overrides) -> Config:
    kw = dict(
        retries={"total_max_attempts": 1, "mode": "standard"},
        read_timeout=120,
        connect_timeout=10,
        max_pool_connections=32,
    )
    kw.update(overrides)
    return Config(**kw)


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def error_status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


@dataclass
class Invocation:
    response: dict
    payload: bytes

    @property
    def status(self) -> int:
        return self.response["StatusCode"]

    @property
    def function_error(self) -> str | None:
        return self.response.get("FunctionError")

    def json(self):
        return json.loads(self.payload)

    @property
    def log_tail(self) -> str:
        return base64.b64decode(self.response["LogResult"]).decode()

    @property
    def headers(self) -> dict:
        return self.response["ResponseMetadata"]["HTTPHeaders"]


def remove_cgroup_parent(data_dir: str, timeout: float = 2.0) -> None:
    """Removes the cgroup parent of a server on `data_dir` (`nimbus-` + the first 12 hex
    digits of the SHA-256 of the directory's canonical path, in every hierarchy) with its
    environments' cgroups. A server stopped normally removes it; a killed one (as teardown
    kills them) cannot, and the kernel keeps each directory, and its memory, until someone
    does. Directories still busy with dying processes are retried until `timeout`."""
    name = "nimbus-" + hashlib.sha256(os.path.realpath(data_dir).encode()).hexdigest()[:12]
    parents = [p for p in (f"/sys/fs/cgroup/{name}",
                           *(os.path.join(h, name) for h in glob.glob("/sys/fs/cgroup/*/")))
               if os.path.isdir(p)]
    deadline = time.monotonic() + timeout
    while parents:
        for parent in list(parents):
            for child in glob.glob(os.path.join(parent, "*/")):
                try:
                    os.rmdir(child)
                except OSError:
                    pass
            try:
                os.rmdir(parent)
                parents.remove(parent)
            except FileNotFoundError:
                parents.remove(parent)
            except OSError:
                pass
        if parents and time.monotonic() < deadline:
            time.sleep(0.02)
        elif parents:
            return


@dataclass
class Server:
    """A `nimbus serve` process on a free loopback port with its own data directory."""

    access_key: bool = True
    extra_args: tuple = ()
    env: dict = field(default_factory=dict)
    sandbox: str = SANDBOX
    data_dir: str = ""
    port: int = 0
    proc: subprocess.Popen | None = None
    names: set = field(default_factory=set)

    def __post_init__(self):
        if not self.data_dir:
            self.data_dir = tempfile.mkdtemp(prefix="nimbus-e2e-data-")
        fd, self.log_path = tempfile.mkstemp(prefix="nimbus-e2e-", suffix=".log")
        os.close(fd)
        self.port = self.port or free_port()
        self._old_pids: set[int] = set()
        LIVE_SERVERS.append(self)

    # ---- lifecycle

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [
            str(NIMBUS_BIN), "serve",
            "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", self.data_dir,
            "--sandbox", self.sandbox,
        ]
        if self.access_key:
            args += ["--access-key", f"{ACCESS_KEY}:{SECRET_KEY}:{ACCOUNT}"]
        return args + list(self.extra_args)

    def process_env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") and not k.startswith("NIMBUS_")}
        env.update(self.env)
        return env

    def start(self, timeout: float = 30.0) -> "Server":
        if not NIMBUS_BIN.exists():
            raise RuntimeError(f"{NIMBUS_BIN} does not exist: build it with cargo build")
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.process_env(), start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nimbus serve exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/nimbus/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nimbus serve not healthy after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)
        self._make_clients()
        return self

    def _make_clients(self):
        self.lam = self.client("lambda")
        self.logs = self.client("logs")

    def crash(self):
        """kill -9 the server process alone (its environments are not signalled)."""
        if self.proc and self.proc.poll() is None:
            self._old_pids |= descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def restart(self, timeout: float = 30.0) -> "Server":
        """kill -9 and start again on the same data dir and port."""
        self.crash()
        return self.start(timeout)

    def kill_everything(self):
        pids = set(self._old_pids)
        if self.proc:
            pids |= descendants(self.proc.pid)
            pids |= session_members(self.proc.pid)
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.proc.kill()
            self.proc.wait(timeout=30)
        for _ in range(3):
            leftovers = {p for p in pids if pid_alive(p)}
            for name in self.names:
                leftovers |= function_processes(name)
            if not leftovers:
                break
            kill_pids(leftovers)
            time.sleep(0.1)

    def close(self):
        try:
            self.kill_everything()
        finally:
            remove_cgroup_parent(self.data_dir)
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if os.environ.get("NIMBUS_E2E_KEEP_LOGS") is None:
                try:
                    os.unlink(self.log_path)
                except OSError:
                    pass
            if self in LIVE_SERVERS:
                LIVE_SERVERS.remove(self)

    def log_tail(self, lines: int = 80) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.read().splitlines(True)[-lines:]).decode(errors="replace")
        except OSError:
            return "<no log>"

    # ---- clients

    def client(self, service: str = "lambda", key: str = ACCESS_KEY, secret: str = SECRET_KEY,
               **config):
        session = boto3.session.Session(
            aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION
        )
        return session.client(service, endpoint_url=self.endpoint, config=client_config(**config))

    def aws_env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION=REGION,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_MAX_ATTEMPTS="1",
        )
        env.update(extra or {})
        return {k: v for k, v in env.items() if v is not None}

    def aws(self, *args: str, env: dict | None = None, timeout: float = 180):
        """Runs the real AWS CLI against this server: (rc, stdout, stderr)."""
        p = subprocess.run(
            [AWS_CLI, "--endpoint-url", self.endpoint, *args],
            env=self.aws_env(env), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return p.returncode, p.stdout, p.stderr

    def nimbus(self, *args: str, env: dict | None = None, timeout: float = 120,
               endpoint_env: bool = True):
        """Runs the `nimbus` CLI (endpoint and keys through the environment)."""
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("AWS_") and not k.startswith("NIMBUS_")}
        if endpoint_env:
            full_env.update(
                NIMBUS_ENDPOINT=self.endpoint,
                AWS_ACCESS_KEY_ID=ACCESS_KEY,
                AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                AWS_DEFAULT_REGION=REGION,
            )
        full_env.update(env or {})
        full_env = {k: v for k, v in full_env.items() if v is not None}
        p = subprocess.run(
            [str(NIMBUS_BIN), *args], env=full_env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )
        return p.returncode, p.stdout, p.stderr

    def raw(self, method: str, path: str, body=b"", headers: dict | None = None, *,
            sign: bool = True, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> RawResponse:
        """A request signed with botocore's SigV4 signer (or unsigned), sent as is."""
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        request = AWSRequest(method=method, url=self.endpoint + path, data=body, headers=headers)
        if sign:
            SigV4Auth(Credentials(key, secret), "lambda", REGION).add_auth(request)
        prepared = request.prepare()
        return http_request(self.endpoint, method, path, prepared.body or b"",
                            dict(prepared.headers.items()))

    # ---- functions

    def name(self, prefix: str) -> str:
        name = unique_name(prefix)
        self.names.add(name)
        return name

    def wait_active(self, name: str, timeout: float = 30.0, client=None):
        client = client or self.lam

        def active():
            cfg = client.get_function_configuration(FunctionName=name)
            assert cfg.get("State", "Active") != "Failed", cfg
            return cfg if cfg.get("State", "Active") == "Active" and \
                cfg.get("LastUpdateStatus", "Successful") != "InProgress" else None

        return wait_until(active, timeout, 0.05, f"function {name} to be Active")

    def create_function(self, prefix: str, runtime: str, zip_bytes: bytes | None = None,
                        handler: str | None = None, client=None, **kw) -> str:
        """Creates a function (boto3) and waits until it is Active; returns its name."""
        name = self.name(prefix)
        client = client or self.lam
        client.create_function(
            FunctionName=name, Runtime=runtime, Role=ROLE,
            Handler=handler or HANDLERS[runtime],
            Code={"ZipFile": zip_bytes if zip_bytes is not None else code_zip(runtime)},
            **kw,
        )
        self.wait_active(name, client=client)
        return name

    def invoke(self, name: str, payload=None, client=None, **kw) -> Invocation:
        client = client or self.lam
        if payload is not None and not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        if payload is not None:
            kw["Payload"] = payload
        response = client.invoke(FunctionName=name, **kw)
        body = response["Payload"].read() if "Payload" in response else b""
        return Invocation(response, body)

    def log_events(self, name: str, stream: str | None = None) -> list[dict]:
        """Every event of the function's log group (or one stream), oldest first."""
        group = f"/aws/lambda/{name}"
        events = []
        if stream:
            token = None
            while True:
                kw = dict(logGroupName=group, logStreamName=stream, startFromHead=True)
                if token:
                    kw["nextToken"] = token
                page = self.logs.get_log_events(**kw)
                events += page["events"]
                if not page["events"] or page.get("nextForwardToken") in (None, token):
                    break
                token = page.get("nextForwardToken")
            return events
        token = None
        while True:
            kw = dict(logGroupName=group)
            if token:
                kw["nextToken"] = token
            page = self.logs.filter_log_events(**kw)
            events += page["events"]
            token = page.get("nextToken")
            if not token:
                break
        return events

    def wait_log(self, name: str, predicate: Callable[[list[str]], bool],
                 timeout: float = 15.0, stream: str | None = None) -> list[str]:
        """Polls the function's log until predicate(messages) holds; returns the messages."""
        def check():
            try:
                messages = [e["message"] for e in self.log_events(name, stream)]
            except ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return None
                raise
            return messages if predicate(messages) else None

        return wait_until(check, timeout, 0.1, f"log lines of {name}")


def report_line_for(messages: list[str], request_id: str) -> str | None:
    for m in messages:
        if m.startswith(f"REPORT RequestId: {request_id}"):
            return m
    return None


REPORT_RE = re.compile(
    r"^REPORT RequestId: (?P<id>" + UUID_RE + r")\t"
    r"Duration: (?P<duration>\d+\.\d{2}) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\t"
    r"Memory Size: (?P<memory>\d+) MB\t"
    r"Max Memory Used: (?P<used>\d+) MB\t"
    r"(?:Init Duration: (?P<init>\d+\.\d{2}) ms\t)?"
    r"(?:Status: (?P<status>\w+)\t(?:Error Type: (?P<error_type>\S+)\t)?)?"
    r"\n?$"
)
START_RE = re.compile(r"^START RequestId: (?P<id>" + UUID_RE + r") Version: (?P<version>\S+)\n?$")
END_RE = re.compile(r"^END RequestId: (?P<id>" + UUID_RE + r")\n?$")


def strip_line(message: str) -> str:
    return message.rstrip("\n")


AWSLAMBDARIC_DIR = REPO / "target" / "e2e-cache" / "awslambdaric"


def awslambdaric_zip() -> bytes:
    """A provided.al2023 package running the basic Python test function under the official
    Python runtime interface client (awslambdaric from PyPI, installed once into target/)."""
    if not (AWSLAMBDARIC_DIR / "awslambdaric").is_dir():
        staging = Path(tempfile.mkdtemp(prefix="awslambdaric-", dir=REPO / "target"))
        subprocess.run(
            ["/usr/bin/python3", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-compile", "--target", str(staging), "awslambdaric"],
            check=True, timeout=600,
        )
        AWSLAMBDARIC_DIR.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(AWSLAMBDARIC_DIR, ignore_errors=True)
        staging.rename(AWSLAMBDARIC_DIR)
    files = {f"lib/{k}": v for k, v in dir_files(AWSLAMBDARIC_DIR).items()
             if not k.startswith("bin/")}
    files.update(dir_files(FUNCTIONS / "python" / "basic"))
    files["bootstrap"] = (
        "#!/bin/sh\n"
        'cd "$LAMBDA_TASK_ROOT"\n'
        'export PYTHONPATH="$LAMBDA_TASK_ROOT/lib:$LAMBDA_TASK_ROOT"\n'
        'exec /usr/bin/python3 -m awslambdaric "$_HANDLER"\n',
        0o755,
    )
    return zip_files(files)
