"""The application entry behind launch.py: config from flags, model folders, then serve.

Until the studio UI and API land, this lists the models it finds and loads none; generation is
available from Python through `webui.core`.
"""

from __future__ import annotations

import argparse
import sys

from webui.core.config import AppConfig
from webui.core.devices import choose_precision
from webui.core.models.manager import ModelManager


def main(ns: argparse.Namespace) -> int:
    config = AppConfig.from_flags(ns)
    precision = choose_precision(config)
    manager = ModelManager(config, precision)
    if ns.demo_model:
        from webui.core.models.tiny import write_demo_checkpoint

        demo = write_demo_checkpoint(config.models_dir)
        print(f"Demo model (tiny, random weights: it draws noise, not pictures): {demo}")
        if config.hashing:
            manager.hashes.hash(demo)  # tiny: hash it now so its title is complete from the start
    for problem in manager.refresh():
        print(f"warning: {problem}", file=sys.stderr)
    files = manager.checkpoints()
    print(f"Sfumato: data folder {config.data_dir}; device {precision.device} ({precision.dtype})")
    if not files:
        print(
            "No checkpoints found. Put .safetensors/.ckpt files (or diffusers folders) in "
            f"{config.ckpt_dirs[0]}, point --data-dir at an existing AUTOMATIC1111 folder, "
            "or try the app with --demo-model."
        )
    for f in files:
        print(f"  {f.title}  ({f.size / 2**20:.1f} MiB)")
    for f in manager.vaes():
        print(f"  VAE: {f.name}")
    print("The studio UI is not built yet: this release lists models; see README for the Python engine.")
    return 0
