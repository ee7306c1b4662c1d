"""A server's roles (§5.1; the pre-candidate is thesis §9.6's pre-vote)."""

FOLLOWER, PRE_CANDIDATE, CANDIDATE, LEADER = "follower", "pre-candidate", "candidate", "leader"
