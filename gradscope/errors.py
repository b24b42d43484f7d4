"""The one error type users see: a one-line message that names the thing at fault."""


class GradscopeError(Exception):
    """Bad input or an unreadable run. The CLI prints ``str(err)`` and exits 2."""
