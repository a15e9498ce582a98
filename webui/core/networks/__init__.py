"""LoRA and LyCORIS networks: find them on disk, parse their formats, patch a model for one job.

- `registry`: discovery in the LoRA folders, header-only metadata, sidecars, A1111 hashes.
- `formats`: kohya/A1111, LyCORIS (LoCon/LoHa/LoKr/full) and diffusers/peft keys -> per-module patches,
  for the UNet families and for SD3 / Flux (kohya's fused original layouts: row slices per module).
- `apply`: `apply_networks(components, [(network, te_w, unet_w)], cache)` patches weights for a job and
  restores the originals bit-exactly on exit.
- `activations`: `<lora:name:w>` tags -> networks and weights, and the infotext's `Lora hashes`.
"""
