"""raftmp: a Raft-replicated key-value store run as a cluster of local processes.

    import raftmp
    with raftmp.Cluster(nodes=5, drop=0.2, seed=7) as cluster:
        kv = cluster.client()
        kv.put("x", "1")
        assert kv.get("x") == "1"

    kv = raftmp.connect(["10.0.0.1:7101", "10.0.0.2:7101", "10.0.0.3:7101"])  # raftmp serve
"""

from .client import Client
from .cluster import Cluster
from .core.errors import (
           ConfigChangeRefused,
           ConfigError,
           InvalidRequest,
           RaftmpError,
           SessionExpired,
           Timeout,
           Unavailable,
)
from .core.kv import Limits
from .core.raft import Config
from .core.session import Timing
from .faults import Faults
from .tcp_client import connect

__all__ = ["Client", "Cluster", "Config", "ConfigChangeRefused", "ConfigError", "Faults", "InvalidRequest", "Limits",
           "RaftmpError", "SessionExpired", "Timeout", "Timing", "Unavailable",
           "connect"]
