"""The application entry behind launch.py: config from flags, model folders, then the server.

Lists the models it finds (writing the tiny demo model first with --demo-model), then serves the APIs
and the studio UI (not with --nowebui) on one port until stopped with Ctrl+C.
"""

from __future__ import annotations

import argparse
import sys

from webui.core.config import AppConfig
from webui.core.devices import choose_precision, device_notes
from webui.core.jobs.ray_pool import RaySetupError
from webui.core.models.manager import ModelManager


def main(ns: argparse.Namespace) -> int:
    from webui.api.auth import AuthSpecError
    from webui.api.hosts import HostSpecError
    from webui.server import build_options, build_services, serve

    try:
        options = build_options(ns)
    except (AuthSpecError, HostSpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = AppConfig.from_flags(ns)
    precision = choose_precision(config)
    manager = ModelManager(config, precision)
    if ns.demo_model:
        from webui.core.models.demo import write_demo

        demo = write_demo(config.models_dir, ns.demo_model)
        print(f"Demo model (tiny, random weights: it draws noise, not pictures): {demo}")
        if config.hashing:
            manager.hashes.hash(demo)  # tiny: hash it now so its title is complete from the start
    for problem in manager.refresh():
        print(f"warning: {problem}", file=sys.stderr)
    for note in device_notes(config, precision):
        print(f"note: {note}", file=sys.stderr if precision.device == "cpu" else sys.stdout)
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
    try:
        services = build_services(config, options, manager)
    except (ValueError, RaySetupError) as e:  # --device-ids / --workers / --ray that cannot be served
        print(f"error: {e}", file=sys.stderr)
        return 2
    ui = None
    if ns.nowebui:
        print("--nowebui: serving the APIs only (see /docs).", flush=True)
    else:
        from webui.server import build_ui

        ui = build_ui(services)
    tls = {"keyfile": ns.tls_keyfile, "certfile": ns.tls_certfile}
    try:
        serve(services, ui, tls=tls, root_path=ns.subpath or "", share=bool(ns.share) and ui is not None)
    except OSError as e:
        print(f"error: cannot serve on {config.host}:{config.port}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
