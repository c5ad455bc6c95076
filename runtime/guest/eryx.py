"""Public Python API of the eryx sandbox: exceptions raised by callbacks.

User code can catch these::

    from eryx import CallbackError
    try:
        await flaky_service()
    except CallbackError as e:
        print(e.type, e.message)
"""


class CallbackError(Exception):
    """A callback failed; .type is the error type the host reported."""

    def __init__(self, type, message):
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message


class CallbackTimeout(CallbackError, TimeoutError):
    """A callback did not answer within its time limit."""


class CallbackLimitError(CallbackError):
    """A callback limit (invocations, argument or response size) was hit."""


class ServiceUnavailable(CallbackError, ConnectionError):
    """No service is running for the callback."""


_secrets = {}


def _set_secrets(env):
    # Called by the runtime before each execution.
    _secrets.clear()
    _secrets.update(env)


def secret(name):
    """The placeholder of a secret the job asked for ("secrets" in the job).

    It is not the value: the host puts the value in its place in traffic to
    the hosts the secret is bound to, and only there. Raises KeyError for a
    secret the job did not ask for.
    """
    try:
        return _secrets[name]
    except KeyError:
        raise KeyError(f"secret {name!r} was not requested by this job") from None


def __getattr__(name):
    # The network errors live with the socket shims, which import this
    # module: resolve them lazily to avoid an import cycle.
    if name in ("NetworkPolicyError", "NetworkLimitError"):
        import _eryx_net
        return getattr(_eryx_net, name)
    raise AttributeError(f"module 'eryx' has no attribute {name!r}")


def runtime_info():
    """What this sandbox's runtime was built from: the Python version, the
    exact Debian source and binary package versions, the stdlib files taken
    from Debian's security update and the time-zone database's version.

    A new dict each call (the caller may change it)."""
    import copy
    import _eryx_build
    return copy.deepcopy(_eryx_build.INFO)
