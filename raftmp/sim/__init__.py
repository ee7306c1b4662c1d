"""A deterministic simulator: the real ``Node`` code on a virtual clock and network.

``python -m raftmp sim`` runs a sweep of seeds, each with a configuration of
its own (``swarm.py``), and prints the one-line replay of any seed that
breaks an invariant; ``--explore`` enumerates the schedules of a short run
instead (``explore.py``). The modules:

- ``config``: ``SimConfig`` (every knob, with the fixed defaults), ``SimResult``;
- ``swarm``: what each seed draws;
- ``run``: ``Simulation``, the run loop, the network and the nodes' turns;
- ``nemesis``: the faults, random and targeted;
- ``checks``: the safety invariants; ``liveness``: the bounds during faults;
- ``model``: the reference state machine and majority (none of the core's code);
- ``explore``: delay-bounded enumeration of schedules;
- ``cli``: the command.
"""

from .checks import Violation
from .cli import main, print_table, run_many, run_seed
from .config import CRASH_POINTS, FAULTS, NEMESES, SIM_RAFT, TIMINGS, SimConfig, SimResult
from .run import Simulation

__all__ = ["CRASH_POINTS", "FAULTS", "NEMESES", "SIM_RAFT", "TIMINGS", "SimConfig", "SimResult",
           "Simulation", "Violation", "main", "print_table", "run_many", "run_seed"]
