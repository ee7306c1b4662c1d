"""The router's control side: the launcher's requests, and the counters.

A mixin of the router process (``router._Router``), which holds the state it
reads and sets: ``faults``, ``cuts``, the per-link counter rows, ``heap`` and
the drop totals.

Control protocol
----------------
Over ``control`` (a trusted ``multiprocessing`` Pipe end), the numbered
protocol of ``launcher.Control``: each request is ``(number, verb, *args)``
and gets exactly one reply ``(number, value)``, the value being an exception
object for the caller to raise on error. Once listening, the router sends the
answer to request 0 unasked: its pid (or the exception that prevented it from
listening). Verbs::

    ("set_faults", {"drop": p, ...}) -> the new Faults
    ("partition", [[0, 1], [2, 3, 4]]) -> None      ("cut", src, dst) -> None
    ("heal",) -> None                               ("stats",) -> dict
    ("stop",) -> None, then the router exits

EOF on ``control`` means the launcher died: the router removes
``cleanup_dir`` (if given) and its socket file, and exits.

Counters (``stats()``)
----------------------
Per directed link ``(src, dst)``: ``packets`` and ``bytes`` (header + payload)
the router received from ``src`` for ``dst``, ``messages`` (sum of header
counts), ``delivered`` (copies handed to ``dst``'s link buffer), ``dropped``
(fault, partition, cut, no live link at delivery time, buffer overflow) and
``duplicated`` (extra copies made). Invariant, per link and in total::

    packets + duplicated == delivered + dropped + in flight (delayed)

Totals add ``malformed`` (frames that are not packets, bad or refused
hellos, absurd lengths), ``unroutable`` (destination that can never exist: negative, or a
client id never assigned; not attributed to any link), and the breakdown of
``dropped``: ``dropped_fault``, ``dropped_partition``, ``dropped_no_link``,
``overflow``.
"""

from __future__ import annotations

import logging
from typing import Any

from .core.errors import ConfigError

log = logging.getLogger("raftmp.router")

# The per-link counters, in the order of a counter list's indices (router.py).
COUNTER_NAMES = ("packets", "bytes", "messages", "delivered", "dropped", "duplicated")


class RouterControl:
    def on_control(self) -> None:
        control = self.control
        try:
            while True:
                request = control.recv()
                number = request[0] if isinstance(request, tuple) and request else None
                control.send((number, self.handle(request[1:] if number is not None else ())))
                if not self.running or not control.poll():
                    return
        except (EOFError, OSError):
            log.info("control connection closed: the launcher is gone; exiting")
            self.running = False
            self.orphaned = True

    def handle(self, request: tuple) -> Any:
        try:
            verb, args = (request[0], request[1:]) if request else (None, ())
            if verb == "set_faults" and len(args) == 1:
                if not isinstance(args[0], dict):
                    raise ConfigError(f"faults must be a dict, not {type(args[0]).__name__}")
                self.faults = self.faults.changed(**args[0])
                self.update_plain()
                log.info("faults: %s", self.faults)
                return self.faults
            if verb in ("partition", "cut", "heal"):
                getattr(self.cuts, verb)(*args)
                self.update_plain()
                log.info("%s%s", verb, args)
                return None
            if verb == "stats" and not args:
                return self.stats()
            if verb == "stop" and not args:
                self.running = False
                return None
            raise ConfigError(f"bad control request {request!r}")
        except Exception as exc:  # the caller re-raises it
            return exc

    def update_plain(self) -> None:
        self.plain = not (self.faults.any or self.cuts)

    def stats(self) -> dict:
        total = dict.fromkeys(COUNTER_NAMES, 0)
        links = {}
        for src, row in self.rows.items():
            for dst, counters in row.items():
                links[(src, dst)] = dict(zip(COUNTER_NAMES, counters, strict=True))
                for name, value in zip(COUNTER_NAMES, counters, strict=True):
                    total[name] += value
        total.update(
            malformed=self.malformed,
            unroutable=self.unroutable,
            dropped_fault=self.dropped_fault,
            dropped_partition=self.dropped_partition,
            dropped_no_link=self.dropped_no_link,
            overflow=self.overflow,
            in_flight=len(self.heap),
        )
        return {
            "seed": self.seed,
            "faults": self.faults,
            "partitions": [list(g) for g in self.cuts.groups],
            "cuts": sorted(self.cuts.one_way),
            "total": total,
            "links": links,
            "endpoints": sorted(self.links),
        }
