"""The launcher's side of its child processes: the router and the workers.

Each child has a control pipe to the launcher and speaks one numbered
protocol over it (``Control``): a request is ``(number, verb, *args)``, its
answer ``(number, value)``, the value an exception object to raise on error.
An answer whose number is not the awaited one is the late answer to a request
whose caller gave up waiting: it is skipped, never taken for the next one's.

The router's verbs are in ``router.py``; the workers' are ``status``,
``dump``, ``transfer`` (a node) and ``stop`` (``worker.py``). ``Cluster`` (``cluster.py``) drives
both through the handles here.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import weakref
from multiprocessing.connection import Connection
from typing import Any, Optional

from .core.errors import Timeout, Unavailable
from .router import DEFAULT_OUT_CAP, run_router
from .transports import wire
from .worker import worker_main

log = logging.getLogger("raftmp.launcher")


class Control:
    """The launcher's end of a numbered control pipe to one child."""

    def __init__(self, conn: Connection, who: str) -> None:
        self.conn = conn
        self.who = who
        self.asked = 0        # request 0 is the child's "ready", answered unasked
        _open.add(self)

    def send(self, verb: str, *args: Any) -> int:
        """Send a request; its number (for ``answer``)."""
        self.asked += 1
        self.conn.send((self.asked, verb, *args))
        return self.asked

    def answer(self, number: int, timeout: float) -> Any:
        """The answer to request ``number``: its value, or the exception it
        carries raised here. Timeout if it does not come within ``timeout``
        seconds; EOFError or OSError if the child is gone."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.conn.poll(max(0.0, deadline - time.monotonic())):
                raise Timeout(f"{self.who} did not answer request {number} within {timeout} s")
            answered, value = self.conn.recv()
            if answered == number:
                break
        if isinstance(value, BaseException):
            raise value
        return value

    def call(self, verb: str, *args: Any, timeout: float) -> Any:
        return self.answer(self.send(verb, *args), timeout)

    def close(self) -> None:
        _open.discard(self)
        self.conn.close()


# Every open launcher-side end, closed in each child forked later: otherwise a
# worker would hold its siblings' (and the router's) control pipes open, and
# they would not see EOF when the launcher dies.
_open: "weakref.WeakSet[Control]" = weakref.WeakSet()


def _close_in_child() -> None:
    for control in list(_open):
        try:
            control.conn.close()
        except OSError:
            pass
    _open.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _reap(process: Any, timeout: float, who: str) -> None:
    """Join ``process``; SIGKILL it if it has not exited within ``timeout``."""
    process.join(timeout)
    if process.is_alive():
        log.warning("%s did not stop; killing it", who)
        process.kill()
        process.join(5.0)


# --- the router -------------------------------------------------------------------


class RouterHandle:
    """The launcher's side of a running router process."""

    def __init__(self, process: Any, control: Control, address: str, secret: bytes) -> None:
        self.process = process
        self.control = control
        self.address = address
        self.secret = secret   # what a replica's hello must carry
        self._stopped = False

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid

    def _call(self, *request: Any, timeout: float = 10.0) -> Any:
        if self._stopped:
            raise Unavailable("the router is stopped")
        return self.control.call(*request, timeout=timeout)

    def set_faults(self, **changes: Any) -> Any:
        """Change any of drop, client_drop, delay=(lo, hi), duplicate; the new ``Faults``."""
        return self._call("set_faults", changes)

    def partition(self, *groups: Any) -> None:
        """Endpoints listed in different groups cannot reach each other; unlisted reach all."""
        self._call("partition", [list(g) for g in groups])

    def cut(self, src: int, dst: int) -> None:
        """Drop every packet from ``src`` to ``dst`` (one way) until ``heal()``."""
        self._call("cut", src, dst)

    def heal(self) -> None:
        """Remove every partition and cut (fault probabilities stay)."""
        self._call("heal")

    def stats(self) -> dict:
        return self._call("stats")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the router and reap it (kill it if it does not exit in time). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.control.call("stop", timeout=timeout)
        except (OSError, EOFError, Timeout):
            pass
        _reap(self.process, timeout, f"router {self.pid}")
        self.control.close()

    def __enter__(self) -> "RouterHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _router_main(address: str, control: Connection, parent_end: Connection, seed: int,
                 secret: bytes, cleanup_dir: Optional[str], out_cap: int) -> None:
    parent_end.close()  # or we would never see EOF when the launcher dies
    run_router(address, control, seed, secret, cleanup_dir, out_cap=out_cap)


def start_router(ctx: Any, address: str, seed: int, *, secret: Optional[bytes] = None,
                 cleanup_dir: Optional[str] = None, out_cap: int = DEFAULT_OUT_CAP,
                 timeout: float = 5.0) -> RouterHandle:
    """Fork the router process (``ctx = multiprocessing.get_context("fork")``).

    ``secret``: what replicas' hellos must carry (default: a fresh one, in
    ``handle.secret``). Returns once it listens on ``address``; raises the
    router's own error if it could not (e.g. the address is taken), or Timeout.
    """
    secret = secrets.token_bytes(wire.SECRET_SIZE) if secret is None else secret
    parent_end, child_end = ctx.Pipe(duplex=True)
    process = ctx.Process(
        target=_router_main,
        args=(address, child_end, parent_end, seed, secret, cleanup_dir, out_cap),
        name="raftmp-router", daemon=False)
    process.start()
    child_end.close()
    handle = RouterHandle(process, Control(parent_end, "the router"), address, secret)
    try:
        handle.control.answer(0, timeout)
    except EOFError:
        handle.stop(timeout)
        raise Unavailable(
            f"router exited before listening (exit code {process.exitcode})") from None
    except BaseException:
        handle.stop(timeout)  # reaps the process (killing it if needed) and closes the pipe
        raise
    return handle


# --- the workers ------------------------------------------------------------------


class WorkerHandle:
    """The launcher's side of one worker process."""

    def __init__(self, node_id: int, process: Any, control: Control) -> None:
        self.id = node_id
        self.process = process
        self.control = control

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid

    def ask(self, verb: str, timeout: float, *args: Any) -> Any:
        """The worker's answer, or None if it is down or busier than ``timeout``."""
        try:
            return self.control.call(verb, *args, timeout=timeout)
        except (OSError, EOFError, Timeout):
            return None

    def request_stop(self) -> None:
        """Ask the worker to stop, without waiting (``reap`` waits)."""
        try:
            self.control.send("stop")
        except OSError:
            pass

    def reap(self, timeout: float) -> None:
        """Wait for the process to exit (SIGKILL after ``timeout``); close the pipe."""
        _reap(self.process, timeout, f"node {self.id}")
        self.control.close()


def start_worker(ctx: Any, node_id: int, nodes: list[int], address: str, secret: bytes,
                 data_dir: str, seed: Any, config: Any, limits: Any, sync: bool) -> WorkerHandle:
    """Fork worker ``node_id`` (the arguments are ``worker.worker_main``'s)."""
    parent_end, child_end = ctx.Pipe(duplex=True)
    control = Control(parent_end, f"node {node_id}")  # registered first: closed in the child
    process = ctx.Process(target=worker_main, name=f"raftmp-node{node_id}",
                          args=(node_id, nodes, address, secret, data_dir, child_end, seed,
                                config, limits, sync, os.getpid()))
    process.start()
    child_end.close()
    return WorkerHandle(node_id, process, control)
