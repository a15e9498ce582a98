"""`KScheduler`: a sigma-space sampler (k_samplers) behind the diffusers scheduler interface the loop uses.

The loop calls the model once per entry of `timesteps` and then `step()`. A k-sampler is a generator
that asks for the model at points of its choosing (two per step for Heun, three per DPM-Solver-3 step,
more for Restart), so `set_timesteps` first runs the sampler dry (on a zero tensor, no noise) to learn
the sigma of every model call; `timesteps` are those sigmas as fractional training timesteps. Each
`step()` turns the model output into `denoised` (from the model's prediction type), sends it to the
running sampler, and returns the next point the sampler wants evaluated (the final latents after the
last call), with the `denoised` estimate as the second element.

img2img: `set_begin_index(k)` plans the run over the schedule's sigmas from index k; `timesteps` then
starts with k copies of the first planned timestep so that `timesteps[k:]` is the run (the slice the
img2img task takes), and `add_noise` noises to the sigma of a timestep.

Noise for the stochastic samplers comes from `step(generator=[one CPU generator per image])`, the
images' own generators (noise.NoiseSource): image i's noise does not depend on the batch, and a seed
gives the same result on any device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from diffusers.configuration_utils import FrozenDict

from webui.core.sampling import k_samplers as ks
from webui.core.sampling import sigma_schedules as sched


class KScheduler:
    order = 1

    def __init__(
        self,
        sampler: ks.Sampler,
        schedule: str,
        base_config: Mapping[str, Any],
        *,
        eta: float = 0.0,
        discard_next_to_last: bool = False,
        needs_uncond: bool = False,
        fixed_schedule: bool = False,
        adaptive: bool = False,
        model_group: str | None = None,
        name: str = "",
    ) -> None:
        if base_config.get("rescale_betas_zero_snr"):
            raise ValueError(
                f"{name or 'this sampler'} cannot run this model: its scheduler config sets "
                "rescale_betas_zero_snr=True (an infinite sigma_max)"
            )
        prediction = base_config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"{name or 'this sampler'} cannot run prediction_type {prediction!r}")
        self.sampler = sampler
        self.schedule = schedule
        self.model_sigmas = sched.ModelSigmas.from_config(base_config)
        self.alphas_cumprod = (1 / (1 + self.model_sigmas.sigmas**2)).to(torch.float32)
        self.prediction_type = str(prediction)
        self.eta = float(eta)  # the run's eta, unless step() is given one
        self.discard_next_to_last = discard_next_to_last
        self.needs_uncond = needs_uncond
        self.fixed_schedule = fixed_schedule
        self.adaptive = adaptive  # the sampler decides its model calls as it runs (DPM adaptive)
        self._current: float | None = None  # adaptive: the sigma of the next model call, None when done
        self.model_group = model_group
        self.config = FrozenDict(  # type: ignore[no-untyped-call]
            {
                **{k: v for k, v in base_config.items() if not k.startswith("_")},
                "sampler": name,
                "schedule": schedule,
                "prediction_type": self.prediction_type,
            }
        )
        self.sigmas = torch.zeros(1, dtype=torch.float64)  # the schedule
        self.timesteps = torch.zeros(0)
        self.num_inference_steps: int | None = None
        self._plan: list[float] = []  # the sigma of each model call (aligned with timesteps)
        self._index = 0
        self._begin = 0
        self._run: ks.Run | None = None

    # -- the schedule and its model calls ----------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        n = int(num_inference_steps)
        label = "Uniform" if self.fixed_schedule else self.schedule
        if self.adaptive:  # the model's whole range, sigma_max to sigma_min: `n` is not used
            m = self.model_sigmas
            sigmas = torch.tensor([m.sigma_max, m.sigma_min, 0.0], dtype=torch.float64)
        elif self.discard_next_to_last and n > 1:  # A1111: one step more, then drop the next-to-last sigma
            sigmas = sched.schedule_sigmas(label, n + 1, self.model_sigmas, model_group=self.model_group)
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        else:
            sigmas = sched.schedule_sigmas(label, n, self.model_sigmas, model_group=self.model_group)
        self.sigmas = sigmas
        self.num_inference_steps = n
        self._device = device
        self.set_begin_index(0)

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Plan the run from the schedule's sigma `begin_index` (img2img)."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps first")
        run = self._sigma_list(begin_index)
        if self.adaptive:
            self._plan = []
            self._current = run[0] if len(run) > 1 else None
            self.timesteps = LiveTimesteps(self)  # type: ignore[assignment]
            self._begin = self._index = begin_index
            self._run = None
            return
        plan = self._dry_run(run) if len(run) > 1 else []
        pad = [plan[0]] * begin_index if plan else []
        self._plan = pad + plan
        t = (
            self.model_sigmas.t(torch.tensor(self._plan, dtype=torch.float64))
            if self._plan
            else torch.zeros(0)
        )
        self.timesteps = t.to(dtype=torch.float32, device=self._device)
        self._begin = begin_index
        self._index = begin_index
        self._run = None

    def _sigma_list(self, begin: int) -> list[float]:
        return [float(s) for s in self.sigmas[begin:]]

    def _dry_run(self, sigmas: list[float], eta: float | None = None) -> list[float]:
        """The sigma of every model call the sampler makes over `sigmas` with this eta (noise and
        values do not change where it asks; eta may: DPM fast steps to each sigma_down)."""
        ctx = ks.Context(noise=torch.zeros_like, eta=self.eta if eta is None else eta)
        run = self.sampler(torch.zeros(1, dtype=torch.float64), sigmas, ctx)
        plan: list[float] = []
        try:
            x, s = next(run)
            while True:
                plan.append(float(s))
                zero = torch.zeros_like(x)
                x, s = run.send(ks.Eval(x, zero, zero))
        except StopIteration:
            return plan

    @property
    def init_noise_sigma(self) -> float:
        return float(self.sigmas[0])

    @property
    def step_index(self) -> int:
        return self._index

    def _sigma_now(self) -> float:
        if self.adaptive:
            if self._current is None:
                raise IndexError(f"{self.config['sampler']}: the run has ended")
            return self._current
        return self._plan[min(self._index, len(self._plan) - 1)]

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample / math.sqrt(self._sigma_now() ** 2 + 1)

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        sigma = self.model_sigmas.sigma(timesteps.detach().cpu().to(torch.float64).reshape(-1))
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        sigma_t = sigma.to(device=original_samples.device, dtype=original_samples.dtype).reshape(shape)
        return original_samples + noise * sigma_t

    # -- one model call ------------------------------------------------------------------------------

    def _denoised(self, output: torch.Tensor, sample: torch.Tensor, sigma: float) -> torch.Tensor:
        if self.prediction_type == "epsilon":
            return sample - sigma * output
        if self.prediction_type == "v_prediction":
            return sample / (sigma**2 + 1) - output * (sigma / math.sqrt(sigma**2 + 1))
        return output

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Sequence[torch.Generator] | None = None,
        eta: float | None = None,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = math.inf,
        s_noise: float = 1.0,
        uncond_output: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Give the sampler the model's output at the current point; return (next point, denoised)."""
        if s_churn:
            raise ValueError(f"{self.config['sampler']} has no sigma churn (s_churn must be 0)")
        if not self.adaptive and self._index >= len(self._plan):
            raise IndexError(f"{self.config['sampler']}: step() called after the last model call")
        sigma = self._sigma_now()
        denoised = self._denoised(model_output, sample, sigma)
        uncond = self._denoised(uncond_output, sample, sigma) if uncond_output is not None else None
        if self._run is None:
            run_eta = self.eta if eta is None else float(eta)
            if (
                run_eta != self.eta
                and self._dry_run(self._sigma_list(self._begin), run_eta) != self._plan[self._begin :]
            ):
                raise ValueError(
                    f"{self.config['sampler']} plans its model calls with eta: make the scheduler with "
                    f"eta={run_eta} (it was made with {self.eta})"
                )
            ctx = ks.Context(noise=_noise_from(generator), eta=run_eta, s_noise=float(s_noise))
            self._run = self.sampler(sample, self._sigma_list(self._begin), ctx)
            next(self._run)
        self._index += 1
        try:
            nxt, self._current = self._run.send(ks.Eval(sample, denoised, uncond))
        except StopIteration as done:
            nxt = done.value
            self._run = None
            self._current = None
        return nxt, denoised

    def progress(self) -> float:
        """Adaptive runs: the fraction of the way from the first sigma to the last, in log sigma."""
        run = [s for s in self._sigma_list(self._begin) if s > 0]
        if self._current is None or len(run) < 2:
            return 1.0
        span = math.log(run[0]) - math.log(run[-1])
        return min(1.0, max(0.0, (math.log(run[0]) - math.log(self._current)) / span)) if span > 0 else 1.0


class LiveTimesteps:
    """The timesteps of an adaptive run, known one at a time: iterating gives the timestep of the next
    model call until the sampler is done; len() is an estimate of the whole run's calls (from the calls
    so far and how far along the sigmas they got), for progress bars."""

    def __init__(self, scheduler: KScheduler) -> None:
        self.scheduler = scheduler

    def __iter__(self) -> Iterator[torch.Tensor]:
        sch = self.scheduler
        while sch._current is not None:
            t = sch.model_sigmas.t(torch.tensor([sch._current], dtype=torch.float64))[0]
            yield t.to(dtype=torch.float32, device=sch._device)

    def __len__(self) -> int:
        sch = self.scheduler
        done = sch._index - sch._begin
        if sch._current is None:
            return done
        fraction = sch.progress()
        guess = round(done / fraction) if fraction > 0.05 else done + int(sch.num_inference_steps or 1)
        return max(guess, done + 1)


def _noise_from(generators: Sequence[torch.Generator] | None) -> Any:
    """Noise like x: one draw per image from that image's CPU generator, then moved to x's device."""

    def noise(x: torch.Tensor) -> torch.Tensor:
        if generators is None or len(generators) != x.shape[0]:
            got = "none" if generators is None else len(generators)
            raise ValueError(
                f"this sampler adds noise: it needs one generator per image ({x.shape[0]}), got {got}"
            )
        draws = [torch.randn(tuple(x.shape[1:]), generator=g, dtype=torch.float32) for g in generators]
        return torch.stack(draws).to(device=x.device, dtype=x.dtype)

    return noise
