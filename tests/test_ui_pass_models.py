"""PNG Info / reuse parameters read the hires checkpoint and the refiner back into the tabs' pickers."""

from __future__ import annotations

from webui.ui.params import from_infotext

TITLES = {"tiny-sd1-b [d4ffd33fa2]": "tiny-sd1-b.safetensors [d4ffd33fa2]", "base": "base.safetensors"}
TEXT = (
    "a cat\nSteps: 6, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, Model: base, "
    "Denoising strength: 0.6, Hires upscale: 1.5, Hires upscaler: Latent, "
    "Hires checkpoint: tiny-sd1-b [d4ffd33fa2], Refiner: base, Refiner switch at: 0.8, "
    "Refiner switch by sampling steps: True, Version: v0.1.0"
)


def test_infotext_fills_the_pickers_with_listed_titles() -> None:
    fields = from_infotext(TEXT, TITLES.get)
    assert fields["hr_checkpoint_name"] == "tiny-sd1-b.safetensors [d4ffd33fa2]"
    assert fields["refiner_checkpoint"] == "base.safetensors" and fields["refiner_switch_at"] == 0.8
    assert fields["enable_hr"] is True


def test_without_the_keys_the_pickers_go_back_to_their_defaults() -> None:
    fields = from_infotext("a cat\nSteps: 6, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64", TITLES.get)
    assert fields["hr_checkpoint_name"] == "Use same checkpoint" and fields["refiner_checkpoint"] == "None"
    unknown = from_infotext(TEXT.replace("Refiner: base", "Refiner: gone [0123456789]"), TITLES.get)
    assert unknown["refiner_checkpoint"] == "None"  # a checkpoint not here is not chosen (as A1111)
