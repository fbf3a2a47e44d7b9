"""Child processes that never outlive the benchmark (the simulated endpoint, a ``--launch``ed server).

- ``OWN_GROUP``: a process group of its own (so the whole server tree can be signalled at once) in the caller's
  session. A new *session* would also be a new Linux scheduling autogroup: measured on 2 cores beside vLLM's CPU
  engine (whose worker and engine core spin between steps), a client in another autogroup was descheduled for
  100-170 ms at a time, and in the same autogroup never more than 9 ms. Python 3.10 has no ``process_group``, so
  there it falls back to a new session.
- ``die_with_parent(argv)``: prefixes ``argv`` with a tiny exec shim that sets ``PR_SET_PDEATHSIG`` (SIGTERM when the
  thread that started the child exits), so even a SIGKILL of the benchmark leaves no server behind. Use it only
  from a thread that lives as long as the child (the main thread): the signal follows the *thread*, not the process.
"""
from __future__ import annotations

import sys
import threading

OWN_GROUP: dict = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}

PDEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "try: ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"  # 1 = PR_SET_PDEATHSIG
    "except (OSError, AttributeError): pass\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(1)\n"  # the parent died before prctl: do not start
    "try: os.execvp(sys.argv[2], sys.argv[2:])\n"
    "except OSError as e: sys.exit(f'cannot run {sys.argv[2]!r}: {e.strerror}')\n"
)


def die_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run through the shim when that is possible (Linux, main thread); else ``argv`` unchanged."""
    import os

    if sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        return [sys.executable, "-c", PDEATHSIG_SHIM, str(os.getpid()), *argv]
    return argv
