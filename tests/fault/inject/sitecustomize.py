"""Test-only fault injection, active only when GS_FAULT is set in a recording process.

GS_FAULT=slow      every shard write sleeps GS_FAULT_SECONDS first (a slow or stuck disk)
GS_FAULT=enospc    shard writes fail with ENOSPC after leaving a partial temp file, and
                   meta.json fsyncs fail with ENOSPC (a disk filled by another process)
                   until the process deletes a reserve file (which frees space)
GS_FAULT=erofs     shard writes and every fsync fail with EROFS (remounted read-only)
Faults start after GS_FAULT_AFTER shard writes (default 0).
"""

import errno
import os
import time

_MODE = os.environ.get("GS_FAULT", "")

if _MODE and os.environ.get("GRADSCOPE_RUN_DIR"):
    import pyarrow.parquet as pq

    _original_write = pq.write_table
    _original_fsync = os.fsync
    _writes = [0]
    _code = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}.get(_MODE)

    def _tripped() -> bool:
        return _writes[0] > int(os.environ.get("GS_FAULT_AFTER", "0"))

    def write_table(table, where, *args, **kwargs):
        _writes[0] += 1
        if _tripped() and _MODE == "slow":
            time.sleep(float(os.environ.get("GS_FAULT_SECONDS", "20")))
        elif _tripped() and _code:
            with open(where, "wb") as handle:
                handle.write(b"PAR1")
            raise OSError(_code, os.strerror(_code))
        return _original_write(table, where, *args, **kwargs)

    _original_unlink = os.unlink
    _freed = [0]

    def unlink(path, *args, **kwargs):
        _original_unlink(path, *args, **kwargs)
        if "reserve" in os.fspath(path):
            _freed[0] += 1

    def fsync(fd):
        if _code and _tripped():
            if _MODE == "enospc" and _freed[0]:
                _freed[0] -= 1
            else:
                raise OSError(_code, os.strerror(_code))
        return _original_fsync(fd)

    pq.write_table = write_table
    os.fsync = fsync
    os.unlink = unlink
