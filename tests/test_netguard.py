"""The tests' own network guard trips: remote connections and name lookups are refused before any
packet leaves, in the pytest process and in the Python processes tests start.

The child checks run inside `unshare -n` (a network namespace with no network), so even a broken
guard could send nothing anywhere: there a real attempt fails with a different error than the guard's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.netguard import sitecustomize as netguard

# TEST-NET-1 (RFC 5737) and a reserved name (RFC 2606): documentation values, never real targets
REMOTE_ADDRESS = ("192.0.2.1", 9)
REMOTE_NAME = "sfumato-guard-check.example"

CHILD = f"""
import socket
for call in (lambda: socket.getaddrinfo({REMOTE_NAME!r}, 80),
             lambda: socket.create_connection({REMOTE_ADDRESS!r}, timeout=2),
             lambda: socket.gethostbyname({REMOTE_NAME!r})):
    try:
        call()
        print("NOT REFUSED")
    except OSError as e:
        print("guard" if {netguard.MARK!r} in str(e) else "other: " + repr(e))
print("loopback:", socket.getaddrinfo("localhost", 80)[0][4][0])
"""


def test_the_pytest_process_is_guarded() -> None:
    assert netguard.installed()
    assert socket.socket.connect.__wrapped__ is not None  # type: ignore[attr-defined]
    assert os.environ["SFUMATO_TEST_NETGUARD"] == "1"
    assert os.environ["PYTHONPATH"].split(os.pathsep)[0] == netguard.GUARD_DIR


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("localhost", True), ("127.0.0.1", True), ("::1", True), ("[::1]", True), ("api.localhost", True),
     (None, True), ("10.0.0.1", True), (REMOTE_NAME, False), ("pypi.org", False), (b"example.com", False)],
)  # fmt: skip
def test_lookup_rule(host: object, allowed: bool) -> None:
    assert netguard.lookup_allowed(host) is allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [(("127.0.0.1", 80), True), (("127.8.9.1", 80), True), (("::1", 80, 0, 0), True),
     (("localhost", 80), True), (REMOTE_ADDRESS, False), (("10.1.2.3", 80), False),
     (("169.254.169.254", 80), False), (("example.com", 80), False), ("/tmp/a.sock", True)],
)  # fmt: skip
def test_connect_rule(address: object, allowed: bool) -> None:
    assert netguard.connect_allowed(address) is allowed


def test_a_name_lookup_in_this_process_is_refused_by_the_guard() -> None:
    with pytest.raises(socket.gaierror, match=netguard.MARK):
        socket.getaddrinfo(REMOTE_NAME, 80)


def test_python_children_are_guarded_even_with_their_own_pythonpath() -> None:
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    env = netguard.child_env(dict(os.environ, PYTHONPATH="/nonexistent"))
    r = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["guard", "guard", "guard"], r.stdout
    assert "loopback: 127.0.0.1" in r.stdout or "loopback: ::1" in r.stdout


def test_without_the_guard_the_same_child_gets_other_errors() -> None:
    """The control: the child's refusals above come from the guard, not from the empty namespace."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -n is not permitted here")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SFUMATO_TEST_NETGUARD")}
    r = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")[:3]
    assert all(line.startswith("other: ") for line in lines), r.stdout
