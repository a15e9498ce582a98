"""`--jemalloc`: run the app with jemalloc as its memory allocator. Standard library only (launch.py).

glibc's malloc fragments under PyTorch's pattern of large, short-lived CPU tensors; jemalloc returns
memory sooner and made CPU generation about 1.3x faster on a 2-core machine (issue 17). An allocator
must be in place before the process starts, so launch.py re-executes itself once with LD_PRELOAD naming
the library (Linux only):

    python launch.py --jemalloc              # the system's libjemalloc (Debian/Ubuntu: libjemalloc2)
    python launch.py --jemalloc /opt/lib/libjemalloc.so.2
    python -m webui.jemalloc [PATH]          # the same re-exec, then says which allocator is loaded

When no library is found the app starts with the default allocator and says so (with how to install
it). A library the dynamic loader refuses is reported the same way after the re-exec.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

NAMES = ("libjemalloc.so.2", "libjemalloc.so.1", "libjemalloc.so")
DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)
GUARD = "SFUMATO_JEMALLOC"  # set in the re-executed process: the library it asked the loader for
INSTALL = (
    "install it (Debian/Ubuntu: apt install libjemalloc2; Fedora: dnf install jemalloc; Arch: pacman -S "
    "jemalloc) or name the file: --jemalloc /path/to/libjemalloc.so.2"
)

Exec = Callable[[str, Sequence[str], Mapping[str, str]], object]


def find(dirs: Sequence[str] = DIRS) -> Path | None:
    """The first jemalloc library file in `dirs`."""
    for folder in dirs:
        for name in NAMES:
            path = Path(folder) / name
            if path.is_file():
                return path
    return None


def loaded(maps: Path = Path("/proc/self/maps")) -> str | None:
    """The jemalloc library this process has mapped (None: not loaded, or the system cannot tell)."""
    try:
        lines = maps.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(maxsplit=5)
        path = parts[5] if len(parts) == 6 else ""
        if "jemalloc" in Path(path).name:
            return path
    return None


def ensure(
    requested: str,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    execve: Exec | None = None,
    dirs: Sequence[str] = DIRS,
    platform: str = sys.platform,
) -> str:
    """Re-execute `argv` (argv[0] is the program) with jemalloc preloaded, unless this process is that
    re-execution already; `requested` is "auto" (search `dirs`) or a library file. Returns the line to
    show: the library in use, or why the default allocator is."""
    env = dict(os.environ if env is None else env)
    if not platform.startswith("linux"):
        return "--jemalloc: preloading an allocator (LD_PRELOAD) works on Linux only; using the default one"
    if env.get(GUARD):
        mapped = loaded()
        if mapped:
            return f"jemalloc: using {mapped}"
        return (
            f"--jemalloc: {env[GUARD]} was preloaded but is not loaded (the dynamic loader refused it; see "
            "its message above); using the default allocator"
        )
    lib = find(dirs) if requested == "auto" else Path(requested)
    if lib is None:
        return (
            f"--jemalloc: no libjemalloc found in {', '.join(dirs)}; {INSTALL}. Using the default allocator"
        )
    if not lib.is_file():
        return f"--jemalloc: {lib} is not a file; {INSTALL}. Using the default allocator"
    preload = env.get("LD_PRELOAD", "").strip()
    env["LD_PRELOAD"] = f"{lib} {preload}" if preload else str(lib)
    env[GUARD] = str(lib)
    (execve or os.execve)(argv[0], list(argv), env)  # replaces this process (returns only in tests)
    return f"jemalloc: re-executed with {lib}"


def main(args: Sequence[str]) -> int:
    """`python -m webui.jemalloc [PATH]`: what `--jemalloc [PATH]` does at start, then the result."""
    requested = args[0] if args else "auto"
    print(ensure(requested, [sys.executable, "-m", "webui.jemalloc", *args]))
    return 0 if loaded() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
