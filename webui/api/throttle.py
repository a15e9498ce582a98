"""Login throttling that holds against clients which stop waiting.

A failed login blocks further guesses from the same client address AND at the same user name for a
while (base, 2*base, 4*base, ... up to cap; the count decays after `window` seconds without a failure).
The block is checked *before* a guess is evaluated: a blocked attempt gets 429 with Retry-After and its
password is never compared, so abandoning slow answers gains nothing, and a right guess is no faster
than a wrong one. A success clears the counter of its address and of the user it proved, never another
user's, so logging in with one's own account between guesses does not help. Guesses spread over many
addresses still meet the per-user counter. (Cost: someone who keeps guessing one user name delays that
user's *new* logins by up to `cap` seconds at a time; browsers already logged in keep their session.)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping

MAX_TRACKED = 4096  # most recent addresses and user names remembered (memory stays bounded)
FAILURE_WINDOW = 15 * 60.0
_MAX_NAME = 200


class LoginThrottle:
    """`protected` (and the names `is_user` accepts): the configured users, whose counters are never
    evicted to bound memory (other names and addresses are, oldest first, past MAX_TRACKED), so a flood
    of made-up names cannot wipe a real user's counter. Made-up names are counted like real ones:
    answers do not reveal which exist.
    """

    def __init__(
        self,
        base: float,
        cap: float,
        window: float = FAILURE_WINDOW,
        protected: Iterable[str] = (),
        is_user: Callable[[str], bool] | None = None,
    ) -> None:
        self.base, self.cap, self.window = base, cap, window
        self._protected = frozenset(("user", u[:_MAX_NAME]) for u in protected)
        self._is_user = is_user  # names that become users later (a users file edited while running)
        self._failures: OrderedDict[tuple[str, str], tuple[int, float, float]] = OrderedDict()
        self._users: dict[tuple[str, str], tuple[int, float, float]] = {}  # the protected counters

    def _table(self, key: tuple[str, str]) -> MutableMapping[tuple[str, str], tuple[int, float, float]]:
        if key in self._protected or (
            key[0] == "user" and self._is_user is not None and self._is_user(key[1])
        ):
            return self._users
        return self._failures

    @staticmethod
    def _keys(client: str, user: str) -> list[tuple[str, str]]:
        keys = [("addr", client)]
        if user:
            keys.append(("user", user[:_MAX_NAME]))
        return keys

    def retry_after(self, client: str, user: str, now: float | None = None) -> float:
        """Seconds until a guess from `client` at `user` may be evaluated (0: now)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        for key in self._keys(client, user):
            entry = self._table(key).get(key)
            if entry is not None:
                wait = max(wait, entry[2] - now)
        return wait

    def failure(self, client: str, user: str, now: float | None = None) -> None:
        """Record a wrong guess: both counters grow and block the next guess for their delay."""
        if self.base <= 0:
            return
        now = time.monotonic() if now is None else now
        for key in self._keys(client, user):
            table = self._table(key)
            count, last, _ = table.get(key, (0, 0.0, 0.0))
            if count and now - last > self.window:
                count = 0
            delay = min(self.base * 2**count, self.cap)
            table[key] = (count + 1, now, now + delay)
            if table is self._failures:
                self._failures.move_to_end(key)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def success(self, client: str, user: str) -> None:
        """A right login: forget the failures of this address and of this user (only)."""
        for key in self._keys(client, user):
            self._table(key).pop(key, None)
