"""The test helper that hands out ports to the processes integration tests start."""

from ports import free_ports


def test_ports_are_distinct_within_and_across_calls():
    first, second = free_ports(40), free_ports(40)
    assert len(set(first)) == 40 and len(set(second)) == 40
    assert not set(first) & set(second)
