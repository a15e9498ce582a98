"""What the HTTP app is handed: the engine parts (Services) and the server's own options.

Built once by `webui.server` and passed to `create_app`; nothing here is global.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.families import Family
from webui.core.models.manager import ModelManager, ModelNotFound
from webui.core.models.registry import ModelFile, find

DEFAULT_MAX_BODY_BYTES = 50 * 2**20
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
ANONYMOUS = "anonymous"
DEFAULT_MAX_JOB_WORK = 4096.0  # megapixel-steps (--max-job-work)


@dataclass(frozen=True)
class ServerOptions:
    """Server behaviour fixed at start: which APIs, who may log in, limits."""

    sdapi: bool = False  # serve /sdapi/v1 (--api, or --nowebui)
    users: Mapping[str, str] = field(default_factory=dict)  # user -> password; empty: auth off
    admins: frozenset[str] = frozenset()  # --admin: users of the flags (or the file) made admins
    users_file: Any = None  # --users-file (a Path): accounts with hashed passwords and roles; None: none
    accounts: Any = None  # webui.api.accounts.Accounts over all of these (roles, keys); None: no login
    cors_origins: tuple[str, ...] = ()  # origins allowed besides the server's own
    allowed_hosts: frozenset[str] = frozenset()  # Host names accepted besides loopback (--allowed-hosts)
    bind_host: str = "127.0.0.1"  # the address bound: beyond loopback, any IP-literal Host is accepted
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    auth_delay: float = 0.5  # seconds a failed login blocks its address and user name; doubles per failure
    auth_delay_max: float = 30.0
    wait_timeout: float = 3600.0  # the longest a blocking /sdapi call waits for its job
    events_poll: float = 15.0  # long-poll slice of the SSE stream
    max_waits_per_user: int = 64  # blocking /sdapi calls one user may have waiting at once (429 beyond)
    forwarded_allow_ips: str | None = None  # proxies whose X-Forwarded-For is trusted; None: none
    header_timeout: float = 10.0  # seconds a request's headers may take to arrive (--header-timeout)
    body_timeout: float = 30.0  # seconds between two pieces of a request body (--body-timeout)
    max_job_work: float = DEFAULT_MAX_JOB_WORK  # the largest job, megapixel-steps; 0: no limit
    max_queued_per_user: int = 50  # jobs one user may have waiting (--max-queued-per-user); 0: no limit
    device_ids: tuple[int, ...] | None = None  # --device-ids: one job worker per CUDA device; None: all
    cpu_workers: int = 1  # --workers: job workers when the models run on the CPU
    ray: Any = None  # webui.core.jobs.ray_pool.RayOptions (--ray, --ray-local, ...); None: in-process workers
    cmd_flags: Mapping[str, Any] = field(default_factory=dict)  # every flag, secrets redacted

    @property
    def auth(self) -> bool:
        return bool(self.users) or self.users_file is not None


@dataclass
class Services:
    """The engine side the routes call: one of each, built by webui.server."""

    config: AppConfig
    engine: Engine
    manager: ModelManager
    queue: Any  # webui.core.jobs.JobQueue
    settings: Any  # webui.core.settings.SettingsStore (get, as_dict, update)
    options: ServerOptions = field(default_factory=ServerOptions)
    merges: Any = None  # webui.core.models.merge_runs.MergeRuns: built for the manager when not given
    gallery: Any = None  # webui.core.outputs.gallery.GalleryIndex: built for the outputs when not given
    cards: Any = None  # webui.core.library.cards.CardLibrary: built for the model folders when not given

    def __post_init__(self) -> None:
        if self.merges is None and self.manager is not None:
            from webui.core.models.merge_runs import MergeRuns

            self.merges = MergeRuns(self.manager)
        if self.gallery is None and self.config is not None:
            from webui.core.outputs.gallery import GalleryIndex

            self.gallery = GalleryIndex.in_folder(self.config.outputs_dir)
        if self.cards is None and self.config is not None:
            from webui.core.library.cards import CardLibrary

            self.cards = CardLibrary.for_config(self.config)

    def find_checkpoint(self, query: str) -> ModelFile | None:
        """The listed checkpoint a title, name or hash names (A1111's look-up order), or None."""
        return find(self.manager.checkpoints(), query)

    def module_names(self) -> list[str]:
        """The files a split SD3/Flux model can be assembled from (VAEs, text encoders), by request name."""
        return [f.name for f in (*self.manager.vaes(), *self.manager.text_encoders())]

    def checkpoint_label(self, file: ModelFile) -> str:
        """A listed checkpoint's family for people ("SD1 (inpaint)", "SD2 (v)", "Flux dev"), or ""."""
        family = self.manager.family_of(file)
        if family is None:
            return ""
        v = "v_prediction" if family.when_v else family.prediction_type
        return family.label(family.when_inpaint is True, v)

    def checkpoint_family(self, query: str | None) -> Family | None:
        """The family of the checkpoint a title or name picks (the first listed one for None), or None
        when no listed checkpoint matches or its file cannot tell (the UI shows a family's controls)."""
        try:
            file = self.manager.resolve(query)
        except ModelNotFound:
            return None
        return self.manager.family_of(file)
