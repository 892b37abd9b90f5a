"""Cold-start benchmark for the runtime bootstraps (not collected by pytest).

    /usr/bin/python3 runtimes/tests/bench_startup.py [runs]

For each runtime, starts the bootstrap `runs` times against the fake Runtime API
with a trivial handler and reports the median / p90 of
  * spawn -> first GET /next   (init done: what the platform's cold-start budget measures)
  * spawn -> first response    (an event is already queued, as on a cold invoke)
and the median warm round trip (queue event -> response) over 200 invokes.

The environment is a clean Lambda-style one: note that NODE_EXTRA_CA_CERTS (set in
many developer shells) alone adds ~50 ms to every node start.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import command, lambda_env, write_files  # noqa: E402
from fake_runtime_api import FakeRuntimeAPI  # noqa: E402

HANDLERS = {
    "python": ("app.handler", {"app.py": "def handler(event, context):\n    return {'ok': True}\n"}),
    "node": ("index.handler", {"index.js": "exports.handler = async () => ({ ok: true });\n"}),
}


def one_start(runtime, root, queue_event, extra_args=()):
    handler, _ = HANDLERS[runtime]
    api = FakeRuntimeAPI()
    rid = api.push({"x": 1}) if queue_event else None
    env = lambda_env(api.address, handler, root)
    t0 = time.monotonic()
    proc = subprocess.Popen(command(runtime, extra_args), cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if queue_event:
            api.wait_result(rid)
            t1 = time.monotonic()
        else:
            assert api.wait_for(lambda: api.next_times)
            t1 = api.next_times[0]
        return (t1 - t0) * 1000
    finally:
        proc.kill()
        proc.wait()
        api.stop()


def warm_round_trips(runtime, root, n=200):
    handler, _ = HANDLERS[runtime]
    api = FakeRuntimeAPI()
    proc = subprocess.Popen(command(runtime), cwd=root, env=lambda_env(api.address, handler, root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api.wait_result(api.push({}))  # warm up
        times = []
        for _ in range(n):
            t0 = time.monotonic()
            api.wait_result(api.push({"x": 1}))
            times.append((time.monotonic() - t0) * 1000)
        return statistics.median(times)
    finally:
        proc.kill()
        proc.wait()
        api.stop()


def summary(values):
    values = sorted(values)
    return (f"median {statistics.median(values):6.1f} ms  p90 {values[int(len(values) * 0.9) - 1]:6.1f} ms"
            f"  min {values[0]:6.1f} ms")


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    for runtime in ("python", "node"):
        with tempfile.TemporaryDirectory() as root:
            write_files(root, HANDLERS[runtime][1])
            one_start(runtime, root, False)  # warm the page cache
            to_next = [one_start(runtime, root, False) for _ in range(runs)]
            to_resp = [one_start(runtime, root, True) for _ in range(runs)]
            print(f"{runtime:6} spawn -> first /next     {summary(to_next)}")
            print(f"{runtime:6} spawn -> first response  {summary(to_resp)}")
            print(f"{runtime:6} warm invoke round trip   median {warm_round_trips(runtime, root):.3f} ms")


if __name__ == "__main__":
    main()
