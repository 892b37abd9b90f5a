"""Its init always fails: provisioned concurrency for it must end in FAILED."""

raise RuntimeError("nimbus-e2e-init-failure-marker: this function cannot start")


def handler(event, context):  # pragma: no cover - never reached
    return "unreachable"
