"""Handler string pkg/mod.handler (a '/' in the module path)."""


def handler(event, context):
    return {"module": __name__}
