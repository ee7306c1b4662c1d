"""What carries a worker's messages: the loop in ``worker.py`` runs over any
object with this shape (a *transport*)::

    fileno()                        readable when messages may have arrived
    receive(now, readable, reject)  -> [(src, message)]: what arrived (and, for
                                    a transport that holds requests back, what
                                    is due again); ``reject(why)`` counts what
                                    it drops; EOFError when the other end is gone
    next_deadline()                 when ``receive`` has something without I/O
    send(messages, now)             [(dst, message)], as few packets as it can
    pickled(entries)                pickles of ``entries`` as they crossed the
                                    wire (for the log file), or None
    close()

The transports and their encodings live here, one floor of their own:

- ``wire``: the router's packet format and the hello (pickled message lists
  between raftmp's own processes, behind the router's secret);
- ``router_link``: ``RouterLink``, a worker's link to the router;
- ``jsonwire``: the JSON encoding of Raft messages, for sockets anyone can
  write to (never pickle);
- ``course_link``: ``CourseLink``, the CS3700 simulator's JSON over UDP;
- ``tcp_link``: ``TcpLink``, ``raftmp serve``'s sockets (peers, clients, RESP,
  metrics) in one selector, whose descriptor is its ``fileno``;
- ``frames``: length-prefixed frames, the hello and the sealed (HMAC'd,
  counted) channel between nodes;
- ``resp``: the RESP2 front end, one client session per connection.
"""
