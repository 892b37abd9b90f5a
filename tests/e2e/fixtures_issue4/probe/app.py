"""Probe function of the issue-4 tests (runtime python3.11, handler app.handler).

Reports which code, configuration, version and kind of environment ran it:
  TAG          the environment variable TAG (a configuration change makes a new version)
  code_tag     the content of code_tag.txt (a code change makes a new version)
  init_type    AWS_LAMBDA_INITIALIZATION_TYPE as seen by the function
  init_id      a random id drawn once per environment, at module load
The event may ask for {"sleep_ms": N} (sleeps first), {"print": "line"} (writes the line to the
log) and carry a "marker" (echoed).
"""

import os
import time
import uuid

INIT_ID = uuid.uuid4().hex
INIT_TYPE_AT_INIT = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")
try:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "code_tag.txt")) as f:
        CODE_TAG = f.read().strip()
except OSError:
    CODE_TAG = None
COUNT = 0


def handler(event, context):
    global COUNT
    COUNT += 1
    event = event if isinstance(event, dict) else {}
    if "print" in event:
        print(event["print"], flush=True)
    if event.get("sleep_ms"):
        time.sleep(event["sleep_ms"] / 1000.0)
    return {
        "tag": os.environ.get("TAG"),
        "code_tag": CODE_TAG,
        "marker": event.get("marker"),
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "log_stream_name": context.log_stream_name,
        "request_id": context.aws_request_id,
        "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "init_type_at_init": INIT_TYPE_AT_INIT,
        "init_id": INIT_ID,
        "pid": os.getpid(),
        "count": COUNT,
    }
