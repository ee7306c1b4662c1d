"""raftmp: a Raft-replicated key-value store run as a cluster of local processes."""
