"""The worker's figures (metrics.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftmp.metrics import LATENCY_BUCKETS, Histogram

latencies = st.lists(st.one_of(st.sampled_from(LATENCY_BUCKETS),   # on a bound: in its bucket
                               st.floats(0, 10, allow_nan=False)), max_size=50)


@given(st.lists(latencies, max_size=5))
def test_observing_a_turns_values_at_once_counts_as_one_at_a_time(turns):
    one, many = Histogram(LATENCY_BUCKETS), Histogram(LATENCY_BUCKETS)
    for values in turns:
        for v in values:
            one.observe(v)
        many.observe_all(list(values))
    assert many.counts == one.counts and many.count == one.count
    assert many.sum == pytest.approx(one.sum)
