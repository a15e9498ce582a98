"""Every sampler a request may name: the built-in ones (webui.core.sampling.samplers) and the ones
extensions register.

An extension's sampler is a name (plus aliases) and `make(scheduler_config) -> scheduler`: a fresh
diffusers-style scheduler (set_timesteps, step, timesteps, init_noise_sigma, scale_model_input,
add_noise, order) built from the model's scheduler config. It runs on its own schedule: its only
schedule type is "Automatic". A built-in name always wins over an extension's.

`SamplerCatalog` is an immutable value; the engine builds one from its extension hooks when asked
(`Engine.samplers`), and `BUILTIN` is the catalog without extensions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webui.core.sampling import flow_samplers
from webui.core.sampling import samplers as builtin
from webui.core.sampling.samplers import AUTOMATIC, UnknownSampler


@dataclass(frozen=True)
class ExtraSampler:
    name: str
    make: Callable[[Mapping[str, Any]], Any]
    aliases: tuple[str, ...] = ()


_SCHEDULER_METHODS = ("set_timesteps", "step", "scale_model_input", "add_noise")


@dataclass(frozen=True)
class SamplerCatalog:
    extra: tuple[ExtraSampler, ...] = ()

    def _builtin(self, name: str) -> bool:
        try:
            builtin.resolve(name)
        except UnknownSampler:
            return False
        return True

    def _extension(self, name: str) -> ExtraSampler | None:
        """The extension sampler `name` means (exact name or alias first, then case-insensitive);
        None for a built-in or unknown name."""
        if self._builtin(name):
            return None
        keys = [(key, s) for s in self.extra for key in (s.name, *s.aliases)]
        exact = next((s for key, s in keys if key == name), None)
        return exact or next((s for key, s in keys if key.casefold() == name.casefold()), None)

    def names(self) -> list[str]:
        """The sampler names to offer: the built-in ones, then the extensions' (not shadowed)."""
        own = builtin.sampler_names()
        return [*own, *(s.name for s in self.extra if not self._builtin(s.name))]

    def resolve(self, sampler_name: str, scheduler: str | None = None) -> tuple[str, str]:
        """(sampler name, schedule type label) as infotext records them; UnknownSampler names the field.

        A name/schedule only flow-matching models run (Euler with Simple) passes too: which sampler a
        model runs is checked once the model is known (`resolve_for`)."""
        try:
            return self._resolve(sampler_name, scheduler)
        except UnknownSampler:
            try:
                return flow_samplers.resolve_flow_sampler(sampler_name, scheduler)
            except (ValueError, AttributeError):
                pass
            raise

    def resolve_for(self, flow: bool, sampler_name: str, scheduler: str | None = None) -> tuple[str, str]:
        """(sampler name, schedule label) for a model family: flow-matching samplers or the others."""
        if not flow:
            return self._resolve(sampler_name, scheduler)
        try:
            return flow_samplers.resolve_flow_sampler(sampler_name, scheduler)
        except ValueError as e:
            field = "scheduler" if "schedule" in str(e).split(";")[0] else "sampler_name"
            raise UnknownSampler(str(e), field) from e

    def _resolve(self, sampler_name: str, scheduler: str | None = None) -> tuple[str, str]:
        if not isinstance(sampler_name, str):
            raise UnknownSampler(f"sampler name must be text, got {sampler_name!r}")
        if scheduler is not None and not isinstance(scheduler, str):
            raise UnknownSampler(f"schedule type must be text, got {scheduler!r}", "scheduler")
        found = self._extension(sampler_name)
        if found is None:
            try:
                info, label = builtin.resolve(sampler_name, scheduler)
            except UnknownSampler as e:
                if e.field == "sampler_name" and self.extra and not self._builtin(sampler_name):
                    names = ", ".join(self.names())
                    raise UnknownSampler(f"unknown sampler {sampler_name!r}: valid names are {names}") from e
                raise
            return info.name, label
        if scheduler is not None and scheduler.casefold() != AUTOMATIC.casefold():
            raise UnknownSampler(
                f"schedule type {scheduler!r} is not supported by {found.name} (an extension's sampler, "
                f"which runs its own schedule): use {AUTOMATIC}",
                "scheduler",
            )
        return found.name, AUTOMATIC

    def make_scheduler(
        self,
        sampler_name: str,
        schedule: str | None,
        base_config: Mapping[str, Any],
        *,
        noise_seeds: Sequence[int] | None = None,
        model_group: str | None = None,
        eta: float | None = None,
    ) -> Any:
        """A fresh scheduler for one run (see samplers.make_scheduler for the built-in ones)."""
        found = self._extension(sampler_name)
        if found is None:
            return builtin.make_scheduler(
                sampler_name, schedule, base_config, noise_seeds=noise_seeds, model_group=model_group, eta=eta
            )
        name, _ = self.resolve(sampler_name, schedule)  # the schedule type must be Automatic
        scheduler = found.make(dict(base_config))
        missing = [m for m in _SCHEDULER_METHODS if not callable(getattr(scheduler, m, None))]
        if missing:
            raise TypeError(
                f"sampler {name!r} (from an extension) made a {type(scheduler).__name__} without "
                f"{', '.join(missing)}: it must return a diffusers-style scheduler"
            )
        return scheduler

    def list_samplers(self) -> list[dict[str, Any]]:
        """GET /sdapi/v1/samplers: the built-in ones, then the extensions'."""
        out = builtin.list_samplers()
        seen = {s["name"] for s in out}
        out += [
            {"name": s.name, "aliases": list(s.aliases), "options": {}}
            for s in self.extra
            if s.name not in seen
        ]
        return out


BUILTIN = SamplerCatalog()
