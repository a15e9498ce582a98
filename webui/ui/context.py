"""What the studio's handlers share: the services, who is asking, each user's choices and running job.

One `StudioContext` is made per built UI (nothing global). It holds, in memory and under a lock:

- `prefs`: each user's top-bar choices (checkpoint, VAE, clip skip). They are settings of *that user's*
  next jobs, never a global switch another user would feel.
- `jobs`: user -> the id of their latest job from the UI: the server-side truth used to reattach a
  reloaded page (the id the browser keeps is only a hint, always checked against the owner).

and `page_load`: the readers, registered while the UI is built, that fill a page's stored-state controls
when it opens (webui.ui.page_load).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ANONYMOUS = "anonymous"
SECRET_FILE = "ui-secret"


def user_of(request: Any) -> str:
    """The logged-in user of a gr.Request (set by the auth middleware), or "anonymous"."""
    name = getattr(request, "username", None) if request is not None else None
    return name if isinstance(name, str) and name else ANONYMOUS


def refusal(services: Any, request: Any, what: str) -> str | None:
    """Why the user of this gr.Request may not do `what` to state every user shares (settings,
    extensions, styles.csv), or None when they may (webui.api.roles: admins, or everyone without a login)."""
    from webui.api.roles import admin_refusal

    return admin_refusal(user_of(request), services.options, what)


def generate_refusal(services: Any, request: Any) -> str | None:
    """Why the user of this gr.Request may not generate (a viewer), or None when they may."""
    from webui.api.roles import generate_refusal as refusal_of

    return refusal_of(user_of(request), services.options)


@dataclass(frozen=True)
class Prefs:
    checkpoint: str | None = None  # title; None: the settings' default
    vae: str = "Automatic"
    clip_skip: int = 1
    distilled_cfg_scale: float = 3.5  # Flux dev's guidance input (the request's default)
    modules: tuple[str, ...] = ()  # VAE / text encoder files of a split SD3/Flux model; (): by their names


def browser_secret(cache_dir: Path) -> str:
    """A fixed secret for gr.BrowserState (kept in <cache>/ui-secret), so a restart keeps it readable."""
    from webui.core.atomic import write_atomic

    path = cache_dir / SECRET_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 32:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    text = secrets.token_hex(32)
    write_atomic(path, text.encode("ascii"))
    with contextlib.suppress(OSError):
        path.chmod(0o600)
    return text


class StudioContext:
    def __init__(self, services: Any, secret: str | None = None) -> None:
        from webui.core.prompts.token_count import TokenCounter

        self.services = services
        self.secret = secret or browser_secret(services.config.cache_dir)
        from webui.ui.lora_browser import ThumbCache
        from webui.ui.page_load import PageLoad

        self.counter = TokenCounter()
        self.lora_thumbs = ThumbCache()
        self.page_load = PageLoad()  # what each page reads when it opens
        from webui.core.user_prefs import FILE_NAME, UserPrefsStore

        # each user's theme, in ui-users.json beside config.json (the data folder)
        self.user_prefs = UserPrefsStore(Path(services.config.settings_path).parent / FILE_NAME)
        self.ui_defaults: Any = None  # webui.ui.ui_prefs.UiDefaultsState, once the tabs are built
        self.style_pickers: list[Any] = []  # every tab's Styles dropdown (a saved style shows in all)
        self.style_changes: list[Any] = []  # the events that save or delete a style
        self._lock = threading.Lock()
        self._prefs: dict[str, Prefs] = {}
        self._jobs: dict[str, str] = {}
        self._stopping: dict[str, tuple[str, int]] = {}  # job id -> (cancel | skip, batch when asked)

    # -- per-user choices -------------------------------------------------------------------------
    def default_prefs(self) -> Prefs:
        settings = self.services.settings
        ckpt = settings.get("sd_model_checkpoint")
        vae = settings.get("sd_vae")
        skip = settings.get("CLIP_stop_at_last_layers")
        return Prefs(
            checkpoint=ckpt if isinstance(ckpt, str) and ckpt else None,
            vae=vae if isinstance(vae, str) and vae else "Automatic",
            clip_skip=skip if isinstance(skip, int) and not isinstance(skip, bool) else 1,
        )

    def prefs(self, user: str) -> Prefs:
        with self._lock:
            found = self._prefs.get(user)
        return found if found is not None else self.default_prefs()

    def set_pref(self, user: str, **changes: Any) -> Prefs:
        with self._lock:
            current = self._prefs.get(user) or self.default_prefs()
            new = replace(current, **changes)
            self._prefs[user] = new
            return new

    # -- jobs ---------------------------------------------------------------------------------------
    def mark_stopping(self, job_id: str, action: str, batch: int) -> None:
        """The user asked to interrupt ("cancel") or skip the job's current batch: say so until it
        happens (the job ends, or its batch moves on)."""
        with self._lock:
            self._stopping[job_id] = (action, batch)

    def stopping_note(self, info: Any) -> str | None:
        with self._lock:
            found = self._stopping.get(info.id)
            moved_on = found is not None and found[0] == "skip" and info.progress.batch != found[1]
            if found is not None and (info.state.finished or moved_on):
                del self._stopping[info.id]
                found = None
        if found is None:
            return None
        return "Interrupting…" if found[0] == "cancel" else "Skipping this batch…"

    def remember_job(self, user: str, job_id: str) -> None:
        with self._lock:
            self._jobs[user] = job_id

    def job_for(self, user: str, hint: str | None = None) -> Any | None:
        """The job a page of this user should show: the browser's hint if the user owns it (and it is
        still running, or nothing newer is known), else the user's latest UI job, else their newest
        unfinished job in the queue. None when there is nothing."""
        queue = self.services.queue
        with self._lock:
            known = self._jobs.get(user)
        candidates = []
        for job_id in (hint, known):
            if not isinstance(job_id, str) or not job_id:
                continue
            try:
                info = queue.get(job_id)
            except LookupError:
                continue
            if info.owner == user:
                candidates.append(info)
        running = [c for c in candidates if not c.state.finished]
        if running:
            return running[0]
        for info in queue.list(owner=user, limit=20):
            if not info.state.finished:
                return info
        if candidates:
            return max(candidates, key=lambda c: c.created)
        return None

    def active_job_id(self, user: str, hint: str | None = None) -> str | None:
        """The user's unfinished job (for Interrupt/Skip), or None."""
        info = self.job_for(user, hint)
        return info.id if info is not None and not info.state.finished else None
