"""Shards: every lane in exactly one shard, the shards' model calls within one lane of each other."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reportgen.errors import StudyError
from reportgen.render.shards import Shard, parse_shard, partition, shard_loads

costs_strategy = st.dictionaries(st.text(min_size=1, max_size=6), st.integers(min_value=1, max_value=2000),
                                 max_size=60)


@settings(max_examples=200, deadline=None)
@given(costs=costs_strategy, count=st.integers(min_value=1, max_value=12))
def test_partition_covers_every_lane_once_and_balances_within_the_heaviest_lane(costs, count):
    assignment = partition(costs, count)
    assert set(assignment) == set(costs)  # every lane, and a dict: each in exactly one shard
    assert all(0 <= shard < count for shard in assignment.values())
    loads = shard_loads(costs, assignment, count)
    assert sum(loads) == sum(costs.values())
    assert max(loads) - min(loads) <= max(costs.values(), default=0)
    assert partition(dict(reversed(list(costs.items()))), count) == assignment  # input order does not matter


def test_a_heun_lane_weighs_twice_a_euler_lane():
    costs = {"euler-a": 10, "euler-b": 10, "heun": 19}
    assignment = partition(costs, 2)
    assert assignment["euler-a"] == assignment["euler-b"] != assignment["heun"]
    assert shard_loads(costs, assignment, 2) == [19, 20]


@pytest.mark.parametrize("text, why", [("0/4", "K must be between 1 and N"), ("5/4", "K must be between 1 and N"),
                                       ("1/0", "N must be between"), ("a/b", "expected K/N"), ("3", "expected K/N")])
def test_bad_shards_are_one_line(text, why):
    with pytest.raises(StudyError, match=why):
        parse_shard(text)


def test_shard_reads_and_prints_as_users_write_it():
    assert parse_shard(" 2 / 4 ") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
