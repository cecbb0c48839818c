"""What a person watching a job sees.

A job started from the command line (``policylm <job>``) shows only its own lines: the run
directory and log file at the start, one line per stage, progress bars with an ETA, the outputs
at the end, and errors in full. Everything else the process prints (Ray's and its workers'
messages, TRL's, transformers') goes to ``console.log`` in the run directory; ``--verbose``
prints everything here instead. The redirection is of file descriptors 1 and 2, so it also takes
what C++ code, child processes and library threads write.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

LOG_NAME = "console.log"

# while a quiet console is open: streams on the terminal's stdout and stderr
_terminal: dict[str, IO[str]] = {}


def terminal(stream: str = "stderr") -> IO[str]:
    """Where the job's own lines go: the terminal's ``stderr`` (lines, progress bars) or
    ``stdout`` (results a user may pipe), also while everything else goes to the log file."""
    return _terminal.get(stream) or (sys.stdout if stream == "stdout" else sys.stderr)


def say(message: str, stream: str = "stderr") -> None:
    """Print a line of the job's own to the terminal (above any progress bar there)."""
    from tqdm import tqdm

    out = terminal(stream)
    tqdm.write(message, file=out)
    out.flush()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str,
             unit: str) -> Any:
    """A tqdm progress bar with an ETA on the terminal (refreshed every 10 s when the terminal is
    a file, such as the log of ``ray job submit``)."""
    from tqdm import tqdm

    out = terminal()
    tty = hasattr(out, "isatty") and out.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=out, dynamic_ncols=True,
                mininterval=0.1 if tty else 10.0)


class _ToTerminal(logging.Handler):
    """The ``policylm`` logger's records to the terminal, except those marked
    ``extra={"detail": True}`` (a stage inside a stage), which only the log file gets."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "detail", False):
            return
        try:
            say(self.format(record))
        except Exception:  # a closed terminal must not stop the job
            self.handleError(record)


class QuietConsole:
    """Everything written to this process's file descriptors 1 and 2 goes to a log file (a
    temporary one until :meth:`attach` names the run directory); the job's own lines go to the
    terminal through :func:`say`, :func:`progress` and the ``policylm`` logger. A context
    manager; on exit the terminal gets its descriptors back."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.path: Path | None = None
        self.attached = False
        self._saved: dict[int, int] = {}
        self._handler: logging.Handler | None = None

    def __enter__(self) -> QuietConsole:
        fd, name = tempfile.mkstemp(prefix=f"policylm-{self.job}-", suffix=".log")
        os.close(fd)
        self.path = Path(name)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
        _terminal["stdout"] = os.fdopen(os.dup(self._saved[1]), "w", buffering=1)
        _terminal["stderr"] = os.fdopen(os.dup(self._saved[2]), "w", buffering=1)
        self._redirect(self.path)
        self._handler = _ToTerminal()
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logging.getLogger("policylm").addHandler(self._handler)
        return self

    def _redirect(self, path: Path) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        with open(path, "a") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)

    def attach(self, run_dir: Path) -> None:
        """From now on the log is ``run_dir/console.log`` (what was written so far is moved
        there; an earlier attempt's log in a resumed run is kept above it). The first call
        counts: a job's sub-jobs write to their parent's log."""
        if self.attached or self.path is None:
            return
        self.attached = True
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # into the early log, before it is copied
        log = Path(run_dir) / LOG_NAME
        with open(log, "a") as out:
            out.write(f"--- policylm {self.job}, {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
            with open(self.path) as early:
                shutil.copyfileobj(early, out)
        self._redirect(log)
        self.path.unlink(missing_ok=True)
        self.path = log
        say(f"policylm {self.job}: run directory {run_dir}; Ray's and the libraries' messages "
            f"in {log} (--verbose prints them here)")

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("policylm").removeHandler(self._handler)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        for stream in _terminal.values():
            stream.close()
        _terminal.clear()
        if self.path is not None and not self.attached:  # a job without a run directory
            if self.path.stat().st_size == 0:
                self.path.unlink(missing_ok=True)
            else:
                say(f"policylm {self.job}: Ray's and the libraries' messages are in {self.path}")


_active: QuietConsole | None = None


def quiet(job: str) -> QuietConsole:
    """The :class:`QuietConsole` of this process's job (one at a time)."""
    global _active
    _active = QuietConsole(job)
    return _active


def attach_run_dir(run_dir: Path) -> None:
    """Move the log of an open quiet console into ``run_dir`` (nothing when none is open)."""
    if _active is not None and _terminal:
        _active.attach(run_dir)


def log_path() -> Path | None:
    """The log file of the open quiet console, or None."""
    return _active.path if _active is not None and _terminal else None
