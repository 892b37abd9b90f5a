"""Its init (module import) takes INIT_SLEEP seconds."""

import os
import time

INIT_STARTED = time.time()
time.sleep(float(os.environ.get("INIT_SLEEP", "0")))


def handler(event, context):
    return {"init_seconds": round(time.time() - INIT_STARTED, 3)}
