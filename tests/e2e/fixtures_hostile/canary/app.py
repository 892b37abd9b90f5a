"""The canary of tests/e2e/test_hostile.py (runtime python3.11, handler app.handler): a
well-behaved function that must keep being served while hostile functions run.
Returns the event's "echo", its pid, its environment's random id and its namespace ids."""

import os
import uuid

ENV_ID = uuid.uuid4().hex


def _ns(kind):
    link = os.readlink(f"/proc/self/ns/{kind}")
    return int(link[link.index("[") + 1:-1])


def handler(event, context):
    event = event if isinstance(event, dict) else {}
    return {
        "echo": event.get("echo"),
        "pid": os.getpid(),
        "env_id": ENV_ID,
        "ns": {k: _ns(k) for k in ("pid", "net", "mnt")},
    }
