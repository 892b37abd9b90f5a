"""Has a syntax error: the invoker must get Runtime.UserCodeSyntaxError."""


def handler(event, context)
    return "unreachable"
