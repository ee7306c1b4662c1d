"""``RouterLink``: a worker's link to raftmp's router (the transport shape is in ``__init__``)."""
from __future__ import annotations

import pickle
from collections import defaultdict
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from ..core.messages import RAFT_MESSAGES, AppendEntries, Entry, check_raft_message
from ..logformat import pack_entries, unpack_entries
from . import wire

INF = float("inf")
PICKLE_CACHE = 64           # pickled entry batches kept for reuse


class RouterLink:
    """The link to the router: wire packets of pickled message lists.

    Entries are pickled once: on the wire an AppendEntries carries its entries
    as one pickle (``bytes``, ``logformat.pack_entries``), cached by range, so
    a leader pickles a batch once for its log file and every follower, and a
    follower writes the pickles it received to its log file as they are. (The router is local and
    stamps ``src``; nothing else can write to this link.)
    """

    def __init__(self, link: Connection, node_id: int) -> None:
        self.link = link
        self.id = node_id
        self.reader = wire.Reader(link)
        self.pickles: dict[tuple[int, int, int], bytes] = {}   # (first, last, last term) -> pickle
        self.received: list[tuple[tuple, bytes]] = []          # this turn's (entries, pickle)

    def fileno(self) -> int:
        return self.link.fileno()

    def next_deadline(self) -> float:
        return INF

    def receive(self, now: float, readable: bool,
                reject: Callable[[str], None]) -> list[tuple[int, Any]]:
        self.received.clear()
        if not readable:
            return []
        out = []
        for packet in self.reader.read():
            try:
                src, _, messages = wire.decode(packet)
            except ValueError as exc:
                reject(f"undecodable packet: {exc}")
                continue
            for m in messages:
                blob = m.entries if type(m) is AppendEntries and type(m.entries) is bytes else None
                if blob is not None:
                    try:
                        m = m._replace(entries=unpack_entries(pickle.loads(blob)))
                    except Exception as exc:  # noqa: BLE001 — any unpickling failure: bad payload
                        reject(f"undecodable AppendEntries from {src}: {exc!r}")
                        continue
                if type(m) in RAFT_MESSAGES:
                    why = check_raft_message(m, src)
                    if why is not None:
                        reject(f"from {src}: {why}")
                        continue
                    # Only a replica's entry pickles may reach the log file (the
                    # router vouches for ids below FIRST_CLIENT_ID).
                    if blob is not None and m.entries and src < wire.FIRST_CLIENT_ID:
                        self.received.append((m.entries, blob))   # the log file takes it as is
                out.append((src, m))
        return out

    def pickled(self, entries: list[Entry]) -> list[bytes]:
        """Pickles whose entries concatenate to ``entries``: what arrived this turn
        when it lines up exactly (the usual case on a follower), else one new one."""
        want, out = entries[0].index, []
        first, last = entries[0].index, entries[-1].index
        for got, blob in self.received:
            hi = got[-1].index
            if got[0].index == want and hi <= last and entries[hi - first].term == got[-1].term:
                out.append(blob)
                want = hi + 1
        if want == last + 1:
            return out
        return [self.pickle_batch(tuple(entries))]

    def pickle_batch(self, entries: tuple) -> bytes:
        """One pickle per batch of entries, shared by the log file and every
        follower it goes to. Equal (index, term) at the end means equal entries
        throughout (Log Matching, §5.3), so that is the cache key."""
        key = (entries[0].index, entries[-1].index, entries[-1].term)
        blob = self.pickles.get(key)
        if blob is None:
            blob = self.pickles[key] = pack_entries(entries)
            if len(self.pickles) > PICKLE_CACHE:
                del self.pickles[next(iter(self.pickles))]
        return blob

    def send(self, messages: list[tuple[int, Any]], now: float) -> None:
        """One packet per destination; raises EOFError when the router is gone."""
        by_dst: dict[int, list] = defaultdict(list)
        for dst, m in messages:
            if type(m) is AppendEntries and m.entries:
                m = m._replace(entries=self.pickle_batch(m.entries))
            by_dst[dst].append(m)
        packets, last, payload = [], None, b""
        for dst, batch in by_dst.items():
            # A leader's appends of one round are the same for every follower:
            # encoded once. (Only appends: equal tuples of other kinds may differ
            # in class, 1 == True.)
            if not (batch == last and set(map(type, batch)) == {AppendEntries}):
                last, payload = batch, wire.encode_payload(batch)
            packets.append(wire.encode(self.id, dst, batch, payload))
        try:
            wire.send_packets(self.link, packets)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise EOFError("the router is gone") from exc

    def close(self) -> None:
        self.link.close()
