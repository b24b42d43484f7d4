"""The one error type users see: a one-line message that names the thing at fault."""

from __future__ import annotations

import errno
import os


class GradscopeError(Exception):
    """Bad input or an unreadable run. The CLI prints ``str(err)`` and exits 2."""


def os_error_line(err: OSError) -> str:
    """An OSError as a short phrase: 'Permission denied', 'File name too long', ..."""
    if err.errno is not None:
        return err.strerror or os.strerror(err.errno) or errno.errorcode.get(err.errno, str(err))
    return str(err) or type(err).__name__


def short_path(path: object) -> str:
    """A path for a one-line message: long ones keep their start and end."""
    text = str(path)
    return text if len(text) <= 80 else text[:40] + "..." + text[-30:]
