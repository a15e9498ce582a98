"""Job workers as Ray actors: a cluster to join (`--ray ADDRESS|auto`) or a local one on 127.0.0.1
(`--ray-local N`), one long-lived actor per GPU (or per node, or N on the local machine, with
`--ray-threads` torch threads each), and one `RayWorker` per actor that the job queue's dispatcher
threads call.

The server keeps the job store: a dispatcher thread claims a job under its lease as for an in-process
worker, sends the request to its actor, streams progress and images back, writes the images to disk,
and records the outcome. Cancel and skip read from the store are pushed to the actor while it runs. An
actor that dies mid-job (its process killed, its node lost) raises WorkerFault: the queue runs the job
once more on another worker, and Ray restarts the actor.

Ray runs code for anyone who reaches its ports and has no login unless RAY_AUTH_MODE=token: a local
cluster listens on loopback only (usage stats off), and joining a non-loopback address needs
RAY_AUTH_MODE=token in the environment or an explicit `--ray-insecure`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webui.core.config import AppConfig
from webui.core.jobs.codec import JobRequest
from webui.core.jobs.control import StoreCancelToken
from webui.core.jobs.remote import (
    DoneMsg,
    ImageMsg,
    JobSpec,
    ProgressMsg,
    RemoteImages,
    WorkerFault,
    WorkerInfo,
)
from webui.core.jobs.worker import Outcome, Reporter
from webui.core.outputs.options import OutputOptions

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -r requirements-ray.txt"
ACTOR_RESTARTS = 3  # Ray restarts a dead actor this many times; then its dispatcher stops
READY_TIMEOUT = 300.0  # seconds an actor may take to (re)start: it imports torch and scans models
LOCKDOWN_ENV = {  # see the README: no usage stats, no cloud-metadata probe (HOME gets an empty bootstrap)
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


class RaySetupError(RuntimeError):
    """The Ray flags cannot be honoured (not installed, an address refused or unreachable)."""


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # --ray: "auto" or host:port of a running cluster
    local: int = 0  # --ray-local N: start a loopback cluster with N actors
    threads: int = 0  # --ray-threads: torch threads per actor (0: the cores / actors, at least 1)
    insecure: bool = False  # --ray-insecure: join a non-loopback address without token auth

    @property
    def enabled(self) -> bool:
        return self.address is not None or self.local > 0


def import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise RaySetupError(f"Ray is not installed; install it with: {INSTALL_HINT}") from e
    return ray


def is_loopback(host: str) -> bool:
    host = host.strip().removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_host(address: str) -> str:
    """The host of "host:port", "ray://host:port" or "[v6]:port"."""
    rest = address.split("://", 1)[-1]
    if rest.startswith("["):
        return rest[1 : rest.find("]")]
    return rest.rsplit(":", 1)[0] if rest.count(":") == 1 else rest


def check_address(address: str, insecure: bool, env: Mapping[str, str]) -> None:
    """RaySetupError for a non-loopback cluster address unless token auth is on or `insecure`."""
    if address == "auto" or is_loopback(address_host(address)):
        return
    if insecure or env.get("RAY_AUTH_MODE", "").lower() == "token":
        return
    raise RaySetupError(
        f"--ray {address}: not a loopback address. A Ray cluster runs code for anyone who reaches its "
        "ports: start it with token auth (RAY_AUTH_MODE=token on every node and here) on a private "
        "network, or pass --ray-insecure if the network is closed by other means"
    )


def check_reachable(address: str, timeout: float) -> None:
    """RaySetupError unless something answers at the cluster's host:port (Ray itself retries for
    minutes)."""
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        raise RaySetupError(f"--ray {address}: expected host:port (or 'auto')")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise RaySetupError(
            f"--ray {address}: the cluster does not answer ({e}); is `ray start` running?"
        ) from e


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` while Ray starts its processes (they inherit it), restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _repo_root() -> str:
    return str(Path(__file__).resolve().parents[3])


class RayCluster:
    """This process's Ray connection (Ray allows one per process): a started local cluster, stopped by
    `close`, or a joined one, left running by `close`."""

    def __init__(self, ray: Any, temp_dir: Path | None, local: bool) -> None:
        self.ray, self.temp_dir, self.local = ray, temp_dir, local

    @classmethod
    def start_local(cls, num_cpus: int) -> RayCluster:
        """A one-machine cluster whose processes all listen on 127.0.0.1 only. Ray reads its loopback
        switch (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) when it is first imported: a process that imported
        Ray before, without it, is refused rather than started on every interface."""
        with _environment(LOCKDOWN_ENV):
            ray = import_ray()
        if ray.is_initialized():
            raise RaySetupError("Ray is already started in this process")
        from ray._private import ray_constants

        if ray_constants.ENABLE_RAY_CLUSTER:
            raise RaySetupError(
                "--ray-local: Ray was imported in this process before its loopback lock-down; it would "
                "listen on every interface. Import it through webui.core.jobs.ray_pool only"
            )
        temp = Path(tempfile.mkdtemp(prefix="sfumato-ray-"))
        (temp / "ray_bootstrap_config.yaml").touch()  # with HOME here: no cloud-metadata probe
        path = os.pathsep.join(p for p in (_repo_root(), os.environ.get("PYTHONPATH", "")) if p)
        env = {**LOCKDOWN_ENV, "HOME": str(temp), "PYTHONPATH": path}
        try:
            with _environment(env):
                ray.init(
                    address="local",
                    _node_ip_address="127.0.0.1",
                    include_dashboard=False,
                    num_cpus=num_cpus,
                    num_gpus=None,
                    _temp_dir=str(temp / "r"),
                    configure_logging=False,
                    log_to_driver=False,
                )
        except Exception as e:
            shutil.rmtree(temp, ignore_errors=True)
            raise RaySetupError(f"--ray-local: Ray did not start: {e}") from e
        cluster = cls(ray, temp, local=True)
        nodes = [str(n.get("NodeManagerAddress", "")) for n in ray.nodes()]
        if not all(is_loopback(n) for n in nodes):
            cluster.close()
            raise RaySetupError(
                f"--ray-local: Ray chose a non-loopback address ({', '.join(nodes)}); stopped"
            )
        return cluster

    @classmethod
    def connect(cls, address: str, insecure: bool = False, timeout: float = 10.0) -> RayCluster:
        """Join the cluster at `address` ("auto": the one `ray start` left on this machine). A loopback
        address keeps this process on loopback too; an address that does not answer fails at once."""
        check_address(address, insecure, os.environ)
        if address != "auto":
            check_reachable(address, timeout)
        loopback = address != "auto" and is_loopback(address_host(address))
        with _environment(LOCKDOWN_ENV if loopback else {}):
            ray = import_ray()
        if ray.is_initialized():
            raise RaySetupError("Ray is already started in this process")
        try:
            with _environment(LOCKDOWN_ENV):
                ray.init(address=address, configure_logging=False, log_to_driver=True)
        except Exception as e:
            raise RaySetupError(f"--ray {address}: cannot join the cluster: {e}") from e
        gcs = str(ray.get_runtime_context().gcs_address)
        try:
            check_address(gcs, insecure, os.environ)  # "auto" found a non-loopback cluster
        except RaySetupError:
            ray.shutdown()
            raise
        return cls(ray, None, local=False)

    def close(self) -> None:
        self.ray.shutdown()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class RayWorker:
    """The server's side of one actor: runs a job on it (`run`), knows its models (`info`)."""

    ray: Any
    actor: Any
    name: str
    info: WorkerInfo
    sha_of: Callable[[str], str | None] = field(default=lambda q: None)
    settings_of: Callable[[], Mapping[str, Any]] = field(default=dict)  # the server's, as a job starts
    poll: float = 0.1  # seconds between two looks at cancel/skip while waiting for the actor
    broken: bool = False  # its actor died: wait for Ray to restart it before the next job

    def refresh(self) -> None:
        """Rescan the actor's model folders (a model was added)."""
        try:
            self.info = self.ray.get(self.actor.refresh.remote(), timeout=READY_TIMEOUT)
        except Exception as e:
            log.warning("Ray worker %s: cannot rescan its models: %s", self.name, e)

    def has_checkpoint(self, query: str | None) -> bool:
        return self.info.has_checkpoint(query, self.sha_of(query) if query else None)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """After a death: wait for the restarted actor (and read its models again); False if it is gone."""
        if not self.broken:
            return True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.info = self.ray.get(self.actor.info.remote(), timeout=timeout)
                break
            except self.ray.exceptions.ActorUnavailableError:  # restarting: ask again
                if time.monotonic() > deadline:
                    log.error("Ray worker %s did not come back within %.0f s", self.name, timeout)
                    return False
                time.sleep(0.5)
            except Exception as e:
                log.error("Ray worker %s did not come back: %s", self.name, e)
                return False
        self.broken = False
        log.warning("Ray worker %s restarted (pid %d)", self.name, self.info.pid)
        return True

    def run(
        self,
        job_id: str,
        request: JobRequest,
        token: StoreCancelToken,
        *,
        results_dir: Path,
        report: Reporter,
        preview_every: int,
        outputs: OutputOptions,
    ) -> Outcome:
        """Run one job on the actor; WorkerFault when the actor dies or answers nonsense."""
        ray = self.ray
        images = RemoteImages(request, results_dir, outputs, report)
        stream = self.actor.run.options(num_returns="streaming").remote(
            JobSpec(job_id, request, preview_every, dict(self.settings_of()))
        )
        sent = (False, 0, False)
        try:
            while True:
                wanted = token.requests()
                if wanted != sent:
                    self.actor.control.remote(job_id, *wanted)
                    sent = wanted
                ready, _ = ray.wait([stream], timeout=self.poll)
                if not ready:
                    continue
                try:
                    ref = next(stream)
                except StopIteration:
                    raise WorkerFault(f"Ray worker {self.name} ended the job without a result") from None
                msg = ray.get(ref)
                if isinstance(msg, ProgressMsg):
                    report.progress(msg.info, msg.preview_png)
                elif isinstance(msg, ImageMsg):
                    images.add(msg)
                elif isinstance(msg, DoneMsg):
                    return images.outcome(msg)
                else:
                    raise WorkerFault(f"Ray worker {self.name} sent {type(msg).__name__}, not a job message")
        except ray.exceptions.RayError as e:
            self.broken = True
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WorkerFault(f"its Ray worker {self.name} died ({type(e).__name__}: {first})") from e
        except BaseException:  # this side failed (an image it could not write, ...): stop the actor's run
            with contextlib.suppress(Exception):
                self.actor.control.remote(job_id, False, 0, True)
            raise


def actor_class(ray: Any) -> Any:
    from webui.core.jobs.ray_worker import RemoteWorker

    return ray.remote(RemoteWorker)


@dataclass(frozen=True)
class ServerSide:
    """What the server gives its workers: `sha_of(checkpoint)` (its hash, to match a model a node holds
    under another path), `settings_of()` (the settings as a job starts, no secrets) and `make_hooks`
    (builds the server's extensions in each actor; None: the server runs none)."""

    sha_of: Callable[[str], str | None] = lambda q: None
    settings_of: Callable[[], Mapping[str, Any]] = dict
    make_hooks: Callable[[AppConfig], Any] | None = None


def worker_plans(
    cluster: RayCluster, options: RayOptions, count: int | None = None
) -> list[tuple[dict[str, Any], int]]:
    """(actor options, torch threads) per actor to start: `options.local` CPU actors on a local cluster
    (`threads` each); on a joined cluster one per GPU, or one per node (all its cores) where it has no
    GPU. With `count` (adding workers to a running pool): that many more of the same kind (a joined
    cluster without GPUs: `threads` cores each, or 1)."""
    ray = cluster.ray
    if cluster.local:
        threads = options.threads or max(1, (os.cpu_count() or 1) // max(options.local, 1))
        return [({"num_cpus": threads}, threads)] * (options.local if count is None else count)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus > 0:
        return [({"num_gpus": 1, "num_cpus": 1}, options.threads)] * (gpus if count is None else count)
    if count is not None:
        threads = options.threads or 1
        return [({"num_cpus": threads}, threads)] * count
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    plans: list[tuple[dict[str, Any], int]] = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        cpus = int(node.get("Resources", {}).get("CPU", 1)) or 1
        threads = options.threads or cpus
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        plans.append(({"num_cpus": min(threads, cpus), "scheduling_strategy": strategy}, threads))
    return plans


def launch_workers(
    cluster: RayCluster,
    config: AppConfig,
    plans: list[tuple[dict[str, Any], int]],
    server: ServerSide,
    first: int = 0,
) -> list[RayWorker]:
    """Start one actor per plan and wait until each has started (its extensions loaded) and listed
    its models; numbered from `first`. On a failure the actors started here are stopped."""
    ray = cluster.ray
    cls = actor_class(ray)
    common = dict(max_restarts=ACTOR_RESTARTS, max_task_retries=0, max_concurrency=4)
    actors = [
        cls.options(**common, **opts).remote(config, threads, server.make_hooks) for opts, threads in plans
    ]
    workers = []
    for n, actor in enumerate(actors, start=first):
        try:
            info = ray.get(actor.info.remote(), timeout=READY_TIMEOUT)
        except Exception as e:
            for started in actors:
                with contextlib.suppress(Exception):
                    ray.kill(started, no_restart=True)
            raise RaySetupError(f"Ray worker {n} did not start: {e}") from e
        name = f"ray{n}@{info.node}:{info.pid}"
        workers.append(RayWorker(ray, actor, name, info, server.sha_of, server.settings_of))
        log.info("Ray worker %d: %s on %s, pid %d, %d checkpoints", n, info.device, info.node, info.pid,
                 len(info.checkpoints))  # fmt: skip
    return workers


def start_workers(
    cluster: RayCluster, config: AppConfig, options: RayOptions, server: ServerSide = ServerSide()
) -> list[RayWorker]:
    """The first actors (worker_plans), started and ready."""
    plans = worker_plans(cluster, options)
    if not plans:
        raise RaySetupError("the Ray cluster has no node to run a worker on")
    return launch_workers(cluster, config, plans, server)


def free_for(cluster: RayCluster, plans: list[tuple[dict[str, Any], int]], wait: float = 10.0) -> None:
    """RaySetupError naming what is missing unless the cluster has the CPUs and GPUs `plans` need free
    now (waiting up to `wait` seconds for a removed actor's share to come back)."""
    need: dict[str, float] = {}
    for opts, _ in plans:
        for key, res in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            need[res] = need.get(res, 0.0) + float(opts.get(key, 0) or 0)
    deadline = time.monotonic() + wait
    while True:
        free = cluster.ray.available_resources()
        short = {r: n for r, n in need.items() if n and free.get(r, 0.0) < n}
        if not short:
            return
        if time.monotonic() > deadline:
            what = ", ".join(f"{n:g} {r} (free: {free.get(r, 0.0):g})" for r, n in short.items())
            raise RaySetupError(
                f"the Ray cluster has no room for {len(plans)} more worker(s): they need {what}"
            )
        time.sleep(0.2)


@dataclass
class RayPool:
    """A cluster and its workers, for the job queue (`workers`); `add` starts more while jobs run,
    `remove` stops one (the queue drains it first); `close` stops what it started."""

    cluster: RayCluster
    workers: list[RayWorker]
    config: AppConfig | None = None
    options: RayOptions | None = None
    server: ServerSide = field(default_factory=ServerSide)
    started: float = field(default_factory=time.time)
    _next: int = 0  # the number the next added worker gets

    @classmethod
    def open(cls, config: AppConfig, options: RayOptions, server: ServerSide = ServerSide()) -> RayPool:
        if options.local > 0:
            threads = options.threads or max(1, (os.cpu_count() or 1) // options.local)
            cluster = RayCluster.start_local(num_cpus=threads * options.local)
        elif options.address is not None:
            cluster = RayCluster.connect(options.address, options.insecure)
        else:
            raise RaySetupError("no Ray cluster asked for (--ray or --ray-local)")
        try:
            workers = start_workers(cluster, config, options, server)
        except BaseException:
            cluster.close()
            raise
        return cls(cluster, workers, config, options, server, _next=len(workers))

    def add(self, count: int) -> list[RayWorker]:
        """`count` more workers of the pool's kind, started and ready; RaySetupError when the cluster has
        no room for them (nothing is started then)."""
        if self.config is None or self.options is None:
            raise RaySetupError("this pool cannot start workers")
        if count < 1:
            raise ValueError(f"count: at least 1, got {count}")
        plans = worker_plans(self.cluster, self.options, count)
        free_for(self.cluster, plans)
        added = launch_workers(self.cluster, self.config, plans, self.server, first=self._next)
        self._next += count
        self.workers.extend(added)
        return added

    def remove(self, worker: RayWorker) -> None:
        """Stop `worker`'s actor for good (the queue has drained it: it runs no job)."""
        with contextlib.suppress(ValueError):
            self.workers.remove(worker)
        with contextlib.suppress(Exception):
            self.cluster.ray.kill(worker.actor, no_restart=True)
        log.info("Ray worker %s removed", worker.name)

    def close(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                self.cluster.ray.kill(worker.actor)
        self.cluster.close()
