"""Its init fails until the epoch second in FAIL_UNTIL has passed, then it works."""

import os
import time

if time.time() < float(os.environ.get("FAIL_UNTIL", "0")):
    raise RuntimeError("init not ready yet")


def handler(event, context):
    return {"ready": True}
