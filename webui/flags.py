"""Command-line flags, with AUTOMATIC1111's names and meanings.

Standard library only: `launch.py` parses flags with this module before the virtual environment exists,
so a typo fails in a second instead of after a dependency install.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

DEMO_MODELS = ("sd1", "sdxl", "sd3", "flux")  # --demo-model ARCH (webui/core/models/demo.py writes them)


class FlagError(ValueError):
    """A command-line flag is unknown or has a bad value."""


class Parser(argparse.ArgumentParser):
    """argparse that raises FlagError instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise FlagError(message)


def civitai_url(text: str) -> str:
    """--civitai-url: an http(s) URL without a query, kept without its trailing slash."""
    from urllib.parse import urlsplit

    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL such as https://civitai.com")
    return text.strip().rstrip("/")


def download_hosts(text: str) -> tuple[str, ...]:
    """--download-hosts: host names or IP addresses, comma-separated (lowercased, no ports)."""
    import ipaddress

    hosts: list[str] = []
    for item in text.split(","):
        host = item.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
        if not host:
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            labels = host.split(".")
            if not all(
                lab and len(lab) <= 63 and lab.replace("-", "").replace("_", "").isalnum() for lab in labels
            ):
                raise argparse.ArgumentTypeError(
                    f"{item.strip()!r} is not a host name (such as mirror.lan) or an IP address"
                ) from None
        hosts.append(host)
    if not hosts:
        raise argparse.ArgumentTypeError("name at least one host")
    return tuple(hosts)


def add_folder_flags(p: argparse.ArgumentParser) -> None:
    folders = p.add_argument_group("folders")
    folders.add_argument("--data-dir", default=None, help="base folder for models/, outputs/, settings")
    folders.add_argument("--ckpt-dir", default=None, help="extra folder of checkpoints")
    folders.add_argument("--vae-dir", default=None, help="folder of VAE files")
    folders.add_argument("--lora-dir", default=None, help="folder of LoRA files")
    folders.add_argument("--embeddings-dir", default=None, help="folder of textual-inversion embeddings")
    folders.add_argument("--styles-file", default=None, help="styles.csv (default: <data-dir>/styles.csv)")
    folders.add_argument("--no-hashing", action="store_true", help="do not compute checkpoint sha256")


def add_device_flags(p: argparse.ArgumentParser) -> None:
    dev = p.add_argument_group("device and precision")
    dev.add_argument(
        "--use-cpu", nargs="+", default=[], metavar="MODULE", help="'all' runs everything on CPU"
    )
    dev.add_argument("--no-half", action="store_true", help="keep models in fp32")
    dev.add_argument("--no-half-vae", action="store_true", help="keep the VAE in fp32")
    dev.add_argument(
        "--precision",
        choices=["full", "autocast", "half", "bf16"],
        default="autocast",
        help="the models' dtype. autocast (default) and half: fp16 on a GPU, fp32 on the CPU; bf16: bfloat16 "
        "on a GPU and on the CPU too (a CPU with AVX512-BF16 or AMX runs it about 3x faster than fp32; "
        "pictures differ slightly from fp32 ones); full: fp32 everywhere (as --no-half)",
    )
    dev.add_argument(
        "--medvram",
        action="store_true",
        help="keep models in RAM and move only the part in use to the GPU: text encoders, then the "
        "UNet/transformer (with ControlNets), then the VAE, in turn (same as --vram medvram)",
    )
    dev.add_argument(
        "--lowvram",
        action="store_true",
        help="as --medvram, and stream the UNet/transformer to the GPU block by block, so only one block's "
        "weights are on it at a time: least memory, slowest (same as --vram lowvram)",
    )
    dev.add_argument(
        "--vram",
        choices=["auto", "none", "medvram", "lowvram"],
        default=None,
        help="how models use GPU memory: 'none' (whole models stay on the GPU: fastest), 'medvram', "
        "'lowvram' (see those flags), 'auto' (the default: from each GPU's free memory at start: 12 GiB "
        "or more none, 6 GiB or more medvram, less lowvram). Without a GPU models run on the CPU in RAM",
    )
    dev.add_argument(
        "--batch-mode",
        choices=["auto", "batched", "per-image"],
        default="auto",
        help="how a batch goes through the model: 'batched' (one call for the whole batch: fast on a GPU; "
        "image i matches a single run within 2/255), 'per-image' (one call per image: bit-identical to "
        "single runs), 'auto' (batched on a GPU, per-image on the CPU)",
    )
    dev.add_argument(
        "--tiled-vae",
        choices=["auto", "on", "off"],
        default="auto",
        help="run the VAE in overlapping tiles (the memory of one 512 px tile, blended seams, several times "
        "the VAE's compute): 'auto' tiles pictures with a side over 2048 px and those an untiled VAE pass is "
        "estimated not to fit in free memory, and retries a GPU decode that runs out of memory in tiles; "
        "'on' always; 'off' never",
    )
    dev.add_argument(
        "--compile",
        action="store_true",
        help="compile the denoiser with torch.compile (inductor): faster steps after a slow first job at "
        "each size (minutes for a real model). CPU: weights frozen into the graph; GPU: CUDA graphs when "
        "whole models stay on it. Compiled code is cached in <data-dir>/cache/torch-compile; if compiling "
        "fails the job runs uncompiled and says so. Not with --lowvram (runs uncompiled)",
    )
    dev.add_argument("--skip-torch-cuda-test", action="store_true", help="start without a GPU")
    dev.add_argument("--model-cache-gb", type=float, default=None, help="RAM for recently used models (GiB)")


def add_worker_flags(p: argparse.ArgumentParser) -> None:
    """The server's job workers (one per device); the one-shot generator has none."""
    workers = p.add_argument_group("job workers")
    workers.add_argument(
        "--device-ids",
        default=None,
        metavar="N[,N]",
        help="CUDA devices to run jobs on, e.g. 0,1: one job worker per device, each with its own model "
        "cache, all fed from the one fair queue. Default: every visible CUDA device (one worker on the CPU)",
    )
    workers.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="job workers when the models run on the CPU (no GPU, or --use-cpu all): N threads, each with "
        "its own model cache, running N jobs at once. Meant for tests and tiny models: each worker holds "
        "its own copy of a model in RAM. Default 1; on a GPU use --device-ids",
    )
    workers.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run jobs on a Ray cluster (host:port of its head, or 'auto'): one worker actor per GPU (per "
        "node without GPUs), each loading models from its own node's folders at the same paths; the server "
        "keeps the queue and writes the images. Needs pip install -r requirements-ray.txt. A non-loopback "
        "address needs RAY_AUTH_MODE=token or --ray-insecure",
    )
    workers.add_argument(
        "--ray-local",
        type=int,
        default=None,
        metavar="N",
        help="start a Ray cluster on this machine, on 127.0.0.1 only, with N worker actors (CPU: see "
        "--ray-threads); it stops with the server",
    )
    workers.add_argument(
        "--ray-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads (and Ray CPUs) per Ray worker actor. Default: the cores divided among the "
        "--ray-local actors; on a joined cluster, all of a node's cores",
    )
    workers.add_argument(
        "--ray-insecure",
        action="store_true",
        help="allow --ray to join a non-loopback address without RAY_AUTH_MODE=token: anyone who reaches "
        "the cluster's ports can run code on it; only on a network closed by other means",
    )


def build_parser(prog: str = "launch.py") -> argparse.ArgumentParser:
    p = Parser(
        prog=prog,
        description="Sfumato: a browser-based Stable Diffusion studio.",
        allow_abbrev=False,
    )
    net = p.add_argument_group("network")
    net.add_argument(
        "--listen",
        action="store_true",
        help="bind 0.0.0.0 (default: 127.0.0.1 only); requests may then name any IP address of this "
        "machine as Host, host names need --allowed-hosts",
    )
    net.add_argument("--server-name", default=None, help="host name or address to bind")
    net.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    net.add_argument("--share", action="store_true", help="open a Gradio share link")
    net.add_argument("--api", action="store_true", help="serve the A1111-compatible /sdapi/v1 API")
    net.add_argument("--nowebui", action="store_true", help="serve the API only, no UI")
    hidden = "; visible in the process list: prefer --gradio-auth-path or SFUMATO_AUTH"
    net.add_argument("--gradio-auth", default=None, metavar="U:P[,U:P]", help="users for the UI" + hidden)
    net.add_argument(
        "--gradio-auth-path",
        default=None,
        metavar="FILE",
        help="file of U:P lines (users of the UI and the API); or put U:P[,U:P] in the environment "
        "variable SFUMATO_AUTH",
    )
    net.add_argument("--api-auth", default=None, metavar="U:P[,U:P]", help="users for the API" + hidden)
    net.add_argument(
        "--users-file",
        default=None,
        metavar="FILE",
        help="accounts with hashed passwords (scrypt) and a role each: admin (settings, extensions, merges, "
        "every job, accounts), user (generates; own jobs and images) or viewer (looks, makes nothing); also "
        "holds the API keys (Authorization: Bearer). Manage it with 'python -m webui.users' (or, for "
        "admins, the Accounts tab and /api/v1/users); a running server sees changes at once. Works beside "
        "the U:P flags",
    )
    net.add_argument("--cors-allow-origins", default=None, help="comma-separated allowed origins")
    net.add_argument(
        "--allowed-hosts",
        default=None,
        metavar="NAME[,NAME]",
        help="host names the server answers to besides localhost, 127.0.0.1, [::1] and --server-name "
        "(any other Host header gets 400: a guard against DNS rebinding). With --listen any IP address "
        "works too; a LAN name, a reverse proxy's public name or a tunnel's name must be listed here. "
        "'*' turns the check off",
    )
    net.add_argument(
        "--download-hosts",
        default=None,
        type=download_hosts,
        metavar="HOST[,HOST]",
        help="hosts model downloads may fetch from besides huggingface.co, hf.co and civitai.com (each with "
        "its subdomains; the download_hosts setting adds more). Only hosts named here may be on the local "
        "network (a LAN mirror): any other host resolving to a private, loopback or link-local address is "
        "refused",
    )
    net.add_argument(
        "--civitai-url",
        default=None,
        type=civitai_url,
        metavar="URL",
        help="where the model library's 'Fetch info' looks files up by hash (default https://civitai.com): "
        "a mirror, or a test's local server. Its host must be on the download allow-list (--download-hosts)",
    )
    net.add_argument(
        "--forwarded-allow-ips",
        default=None,
        metavar="IP[,IP]",
        help="trust X-Forwarded-For/-Proto only from these proxy addresses ('*': any). Default: trusted "
        "from nowhere, so the client address (login throttling, logs) is the connecting socket's",
    )
    net.add_argument(
        "--admin",
        default=None,
        metavar="USER[,USER]",
        help="users (of --users-file, --api-auth, --gradio-auth or --gradio-auth-path) who are admins: "
        "they change server settings, extensions, styles and model lists, and see, cancel and skip every "
        "user's jobs. Other U:P users are plain users; with no login the one local user is the admin",
    )
    net.add_argument(
        "--max-job-work",
        type=float,
        default=None,
        metavar="MPIX_STEPS",
        help="largest job accepted, in megapixel-steps: width*height/1e6 * steps * batch_size * n_iter "
        "(hires second pass added). Default 4096 (e.g. 512x512, 50 steps, 312 images); 0: no limit",
    )
    net.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="close a connection whose request headers take longer than this to arrive (default 10)",
    )
    net.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="close a connection whose request body pauses longer than this (default 30)",
    )
    net.add_argument(
        "--max-queued-per-user",
        type=int,
        default=50,
        metavar="N",
        help="jobs one user may have waiting in the queue at once (default 50; the queue holds 200 in all); "
        "one more gets 429, so one user cannot lock the others out. 0: no per-user limit",
    )
    net.add_argument("--tls-keyfile", default=None)
    net.add_argument("--tls-certfile", default=None)
    net.add_argument("--subpath", default=None, help="serve under this URL path")
    net.add_argument(
        "--enable-insecure-extension-access",
        action="store_true",
        help="allow installing extensions even when others can reach the server",
    )

    add_folder_flags(p)
    add_device_flags(p)
    add_worker_flags(p)

    app = p.add_argument_group("sfumato")
    app.add_argument(
        "--demo-model",
        nargs="?",
        const="sd1",
        default=None,
        choices=DEMO_MODELS,
        metavar="ARCH",
        help="write a tiny random-weight checkpoint of ARCH (" + ", ".join(DEMO_MODELS) + "; default sd1) "
        "into models/Stable-diffusion to try the app",
    )
    app.add_argument(
        "--jemalloc",
        nargs="?",
        const="auto",
        default=None,
        metavar="PATH",
        help="use jemalloc as the memory allocator (Linux: the app re-starts itself once with LD_PRELOAD): "
        "the system's libjemalloc (Debian/Ubuntu package libjemalloc2), or the library file PATH. Less "
        "memory fragmentation, faster on the CPU. If none is found the app says so and uses the default "
        "allocator",
    )
    app.add_argument("--skip-install", action="store_true", help="do not install requirements")
    app.add_argument("--venv", default=None, help="virtual environment folder (default: .venv)")
    return p


def check_common(ns: argparse.Namespace) -> None:
    """Value checks argparse cannot express, for flags shared by launch.py and the generator."""
    if ns.use_cpu and any(m not in {"all", "sd", "interrogate", "gfpgan", "codeformer"} for m in ns.use_cpu):
        raise FlagError(f"--use-cpu: unknown module in {ns.use_cpu}; use 'all'")
    if ns.model_cache_gb is not None and not ns.model_cache_gb >= 0:
        raise FlagError("--model-cache-gb: must be 0 or more")
    asked = [f for f in ("medvram", "lowvram") if getattr(ns, f, False)]
    if len(asked) > 1:
        raise FlagError("--medvram and --lowvram: choose one")
    if asked and ns.vram not in (None, asked[0]):
        raise FlagError(f"--{asked[0]} and --vram {ns.vram}: choose one")
    ns.vram = ns.vram or (asked[0] if asked else "auto")


def parse_device_ids(spec: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """--device-ids "0,1" -> (0, 1); None stays None (every visible device)."""
    if spec is None or not isinstance(spec, str):
        return None if spec is None else tuple(spec)
    parts = [p.strip() for p in spec.split(",")]
    if not all(p.isdigit() for p in parts):
        raise FlagError(f"--device-ids: expected device numbers like 0,1, got {spec!r}")
    ids = tuple(int(p) for p in parts)
    if len(set(ids)) != len(ids):
        raise FlagError(f"--device-ids: a device is named twice in {spec!r}")
    return ids


def parse_flags(argv: Sequence[str], prog: str = "launch.py") -> argparse.Namespace:
    """Parse flags; raise FlagError with argparse's message on an unknown flag or a bad value."""
    ns = build_parser(prog).parse_args(list(argv))
    if not 1 <= ns.port <= 65535:
        raise FlagError(f"--port: {ns.port} is not a port number (1-65535)")
    if ns.max_job_work is not None and not ns.max_job_work >= 0:
        raise FlagError(f"--max-job-work: must be 0 (no limit) or more, got {ns.max_job_work}")
    if ns.max_queued_per_user < 0:
        raise FlagError(f"--max-queued-per-user: must be 0 (no limit) or more, got {ns.max_queued_per_user}")
    if ns.jemalloc not in (None, "auto") and not os.path.isfile(ns.jemalloc):
        raise FlagError(f"--jemalloc: {ns.jemalloc} is not a file (name libjemalloc.so.2, or give no path)")
    check_common(ns)
    ns.device_ids = parse_device_ids(ns.device_ids)
    if ns.workers < 1:
        raise FlagError(f"--workers: must be 1 or more, got {ns.workers}")
    check_ray_flags(ns)
    return ns


def check_ray_flags(ns: argparse.Namespace) -> None:
    """--ray/--ray-local/--ray-threads/--ray-insecure: one cluster, counts over 0, no flag that would do
    nothing."""
    if ns.ray is not None and ns.ray_local is not None:
        raise FlagError("--ray and --ray-local: choose one (join a cluster, or start one here)")
    if ns.ray is not None and not ns.ray.strip():
        raise FlagError("--ray: give the cluster's address (host:port) or 'auto'")
    if ns.ray_local is not None and ns.ray_local < 1:
        raise FlagError(f"--ray-local: must be 1 or more actors, got {ns.ray_local}")
    ray = ns.ray is not None or ns.ray_local is not None
    if ns.ray_threads is not None and (not ray or ns.ray_threads < 1):
        raise FlagError("--ray-threads: needs --ray or --ray-local, and a count of 1 or more")
    if ns.ray_insecure and ns.ray is None:
        raise FlagError("--ray-insecure: only with --ray ADDRESS (a local cluster is on loopback anyway)")
    if ray and (ns.workers != 1 or ns.device_ids is not None):
        raise FlagError(
            "--ray/--ray-local run the jobs: --workers and --device-ids are for in-process workers"
        )
