"""Settings are validated where they are made, with a message naming the
setting; every deliberate error is a RaftmpError."""

from __future__ import annotations

import pytest

import raftmp
from raftmp.client import result_of
from raftmp.core.errors import CorruptStorage
from raftmp.core.messages import Command
from raftmp.core.session import DONE, FAILED, UNKNOWN, Outcome
from raftmp.sim import SimConfig


@pytest.mark.parametrize("make, words", [
    (lambda: raftmp.Config(heartbeat_interval=0), ["heartbeat_interval", "0"]),
    (lambda: raftmp.Config(heartbeat_interval=0.3), ["election_timeout"]),
    (lambda: raftmp.Config(election_timeout=(0.4, 0.2)), ["election_timeout"]),
    (lambda: raftmp.Config(election_timeout=0.3), ["election_timeout"]),
    (lambda: raftmp.Config(max_inflight=0), ["max_inflight"]),
    (lambda: raftmp.Config(max_batch_entries=2.5), ["max_batch_entries", "int"]),
    (lambda: raftmp.Config(min_rto=0.5, max_rto=0.1), ["min_rto", "max_rto"]),
    (lambda: raftmp.Limits(max_key_bytes=0), ["max_key_bytes"]),
    (lambda: raftmp.Limits(max_value_bytes=True), ["max_value_bytes"]),
    (lambda: raftmp.Config(session_timeout=9), ["session_timeout", "9", "client_op_timeout",
                                                "5.0", "op_timeout"]),
    (lambda: raftmp.Config(client_op_timeout=0), ["client_op_timeout"]),
    (lambda: raftmp.Cluster(3, timing=raftmp.Timing(op_timeout=6)),
     ["Timing.op_timeout", "6", "Config.client_op_timeout"]),
    # The default Timing (op_timeout 5) is checked too (review of issue 18).
    (lambda: raftmp.Cluster(3, config=raftmp.Config(client_op_timeout=3)),
     ["Timing.op_timeout", "5.0", "Config.client_op_timeout", "3"]),
    (lambda: raftmp.Timing(attempt_timeout=-1), ["attempt_timeout"]),
    (lambda: raftmp.Timing(op_timeout=float("nan")), ["op_timeout"]),
    (lambda: raftmp.Faults(drop=1.5), ["drop"]),
    (lambda: raftmp.Faults(client_drop="0.1"), ["client_drop"]),
    (lambda: raftmp.Faults(delay=(0.2, 0.1)), ["delay"]),
    (lambda: raftmp.Faults(delay=0.1), ["delay"]),
    (lambda: raftmp.Faults().changed(loss=0.1), ["loss"]),
    (lambda: raftmp.Cluster(0), ["nodes"]),
    (lambda: raftmp.Cluster(3, duplicate=-0.1), ["duplicate"]),
    (lambda: SimConfig(drop=1.0), ["drop"]),
    (lambda: SimConfig(faults=("meteor",)), ["meteor"]),
])
def test_bad_settings_are_refused_by_name(make, words):
    with pytest.raises(raftmp.ConfigError) as e:
        make()
    assert isinstance(e.value, raftmp.RaftmpError) and isinstance(e.value, ValueError)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_defaults_are_valid_and_faults_change_one_knob():
    raftmp.Config(), raftmp.Limits(), raftmp.Timing()
    f = raftmp.Faults(drop=0.2).changed(delay=[0, 0.01])
    assert f == raftmp.Faults(drop=0.2, delay=(0.0, 0.01)) and f.any
    assert not raftmp.Faults().any


def test_every_deliberate_error_is_a_raftmp_error():
    from raftmp.scenario_file import ConfigError as ScenarioConfigError
    for error in (raftmp.InvalidRequest, raftmp.Unavailable, raftmp.Timeout, raftmp.ConfigError,
                  CorruptStorage, ScenarioConfigError):
        assert issubclass(error, raftmp.RaftmpError), error


@pytest.mark.parametrize("kind, why, error", [
    (UNKNOWN, "timed out", raftmp.Timeout),
    (FAILED, "invalid: key must be str", raftmp.InvalidRequest),
    (FAILED, "no leader answered", raftmp.Unavailable),
])
def test_an_outcome_carries_its_error_type(kind, why, error):
    """A blocking call raises the outcome's error type (not one told from its text)."""
    cmd = Command(1, 1, 1, "put", "k", "v", None)
    with pytest.raises(error, match=why):
        result_of(Outcome(cmd, kind, why, 0.0, 1.0, error))
    assert result_of(Outcome(cmd, DONE, "invalid: a value that looks like an error",
                             0.0, 1.0)) == "invalid: a value that looks like an error"
