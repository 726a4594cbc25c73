"""How stage C groups its warps into tasks."""

from __future__ import annotations

import pytest

from bgdask.stages import aligned_groups, group_size


@pytest.mark.parametrize("n", list(range(1, 20)) + [63, 64, 65, 257])
@pytest.mark.parametrize("size", [1, 2, 16, 64])
def test_aligned_groups_cover_every_warp_once_in_order(n, size):
    groups = aligned_groups(n, size)
    assert [i for g in groups for i in g] == list(range(n))
    assert all(len(g) == size for g in groups[:-1]) and 1 <= len(groups[-1]) <= size


def test_group_size_aims_at_enough_work_per_task():
    assert group_size(500.0) == 1          # a large warp: one per task
    assert group_size(30.0) == 2
    assert group_size(2.0) == 32           # tiny warps: 32 x 2 ms >= 50 ms
    assert group_size(0.0) == 256          # at most 256
