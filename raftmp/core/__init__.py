"""The pure layers: the Raft core, the key-value state machine, the client
protocol and a replica that ties them together.

Nothing in this package reads a clock, sleeps, does I/O, starts a thread or
touches the global ``random``: time comes in as ``now`` and randomness from an
injected ``random.Random``. That is what lets the same code run in a worker
process, in the deterministic simulator and in the CS3700 replica.
``tests/test_layers.py`` keeps it so.
"""
