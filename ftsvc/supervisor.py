"""The processes of `ftsvc serve`, each in a process group of its own: started
together, and stopped together, within a bound, on SIGTERM or SIGINT (or when one of
them dies). A stop asks each process to stop (SIGTERM: the API finishes its requests,
a worker lets its job checkpoint and give it back), then kills each whole group, so
nothing they started (a job's process) outlives the service."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from types import FrameType
from typing import IO


class Supervisor:
    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # Caught from before the first start: a signal in between must not kill this
        # process and leave the others running.
        self._asked = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, _: FrameType | None) -> None:
        self._asked.set()

    def start(self, name: str, command: list[str], output: IO[bytes] | None = None) -> None:
        """`output`: where its stdout and stderr go (default: this process's)."""
        stderr = None if output is None else subprocess.STDOUT
        self.processes[name] = subprocess.Popen(command, start_new_session=True, stdout=output, stderr=stderr)

    @property
    def stop_requested(self) -> bool:
        """SIGTERM or SIGINT arrived."""
        return self._asked.is_set()

    def exited(self) -> str | None:
        """The name of a process that has exited, if one has."""
        return next((name for name, process in self.processes.items() if process.poll() is not None), None)

    def wait_until_answers(self, name: str, url: str, timeout: float) -> None:
        """Until the process `name` answers `url` (a health check); an error if it exits
        first or does not answer within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                return
            except OSError:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"the {name} exited while starting") from None
                if self._asked.is_set():  # stopping anyway: wait_for_stop says so
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {name} did not answer {url} within {timeout:g} s") from None
                time.sleep(0.2)

    def wait_for_stop(self) -> str | None:
        """Until SIGTERM or SIGINT arrives (None) or a process exits (its name)."""
        while not self._asked.wait(0.2):
            if (name := self.exited()) is not None:
                return name
        return None

    def stop(self, bound: float) -> None:
        """SIGTERM to every process; after `bound` seconds, or once its process has
        exited, SIGKILL to each process group, whatever is left in it."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + bound
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group is empty: all of it exited
                pass
            process.wait()
