"""Leave the process quickly once a command has succeeded.

After a pipeline has closed its outputs, a normal interpreter exit still collects every
module's objects and runs the C++ destructors of torch and CUDA, and the compression pool's
teardown: 0.5-0.6 s on the lent H100 host for an ``embed`` of E. coli
(``benchmarks/results/exit_probe_h100_stop11.log``), paid after the user's file is complete.
:func:`exit_now` runs the ``atexit`` handlers (logging, multiprocessing, torch), flushes the
standard streams and ends the process with ``os._exit``, but only when nothing can be lost: the
command succeeded, no other non-daemon thread runs and no HDF5 object is open. Otherwise, and
with ``DNASTREAM_SLOW_EXIT=1``, it exits normally.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading


def _hdf5_objects_open() -> bool:
    """True if h5py is loaded and an HDF5 file with storage behind it is still open (an open
    object keeps its file open; in-memory scratch files, ``core`` driver without a backing
    store, hold nothing to lose)."""
    h5py = sys.modules.get("h5py")
    if h5py is None:
        return False
    try:
        for fid in h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE):
            fapl = fid.get_access_plist()
            if fapl.get_driver() == h5py.h5fd.CORE and not fapl.get_fapl_core()[1]:
                continue
            return True
        return False
    except Exception:  # noqa: BLE001 - unknown state: take the normal exit
        return True


def fast_exit_safe(code: int) -> bool:
    """Whether :func:`exit_now` may skip the interpreter's teardown for exit status ``code``."""
    if code != 0 or os.environ.get("DNASTREAM_SLOW_EXIT", "").strip() not in ("", "0"):
        return False
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return False
    return not _hdf5_objects_open()


def exit_now(code: int | str | None) -> None:
    """End the process with ``code`` (as :class:`SystemExit` reads it), quickly when safe."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # a message: printed, status 1 (what sys.exit does with it)
        print(code, file=sys.stderr)
        status = 1
    if not fast_exit_safe(status):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream has nothing left to flush
            pass
    os._exit(status)
