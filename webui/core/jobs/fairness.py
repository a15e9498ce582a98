"""Fair run order: round-robin between owners, first in first out within one owner.

The owner whose last job started longest ago goes next; an owner who never ran a job goes before
everyone who did (ties: whose oldest waiting job came first). Applied again after every pick, this
gives the whole order of the waiting jobs, so queue positions are exact, not estimates.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping, Sequence


def fair_order(queued: Sequence[tuple[str, str]], last_run: Mapping[str, int]) -> list[str]:
    """Job ids in the order they will run.

    queued: (job_id, owner) pairs in submission order. last_run: owner -> the run number of that
    owner's most recently started job (run numbers increase by one per started job; missing: never).
    """
    per_owner: dict[str, deque[str]] = {}
    first_seen: dict[str, int] = {}
    for i, (job_id, owner) in enumerate(queued):
        per_owner.setdefault(owner, deque()).append(job_id)
        first_seen.setdefault(owner, i)
    # key: (when it last ran: -1 for never, position of its oldest waiting job, owner)
    heap = [(last_run.get(owner, -1), first_seen[owner], owner) for owner in per_owner]
    heapq.heapify(heap)
    clock = max(last_run.values(), default=0)
    order: list[str] = []
    while heap:
        _, seen, owner = heapq.heappop(heap)
        jobs = per_owner[owner]
        order.append(jobs.popleft())
        clock += 1
        if jobs:
            heapq.heappush(heap, (clock, seen, owner))
    return order
