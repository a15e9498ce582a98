"""Generate images from the command line: `python -m webui.generate "a prompt" [flags]`.

Writes the images (with infotext) under outputs/ and prints one path per line. Flags are the request's
field names with dashes, plus launch.py's folder and device flags. Run it inside the venv that
`python launch.py` set up (e.g. `.venv/bin/python -m webui.generate ...`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from webui import flags, offline


def build_parser() -> argparse.ArgumentParser:
    p = flags.Parser(prog="python -m webui.generate", description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("prompt", help="the prompt (A1111 syntax)")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg-scale", type=float, default=7.0)
    p.add_argument(
        "--distilled-cfg-scale", type=float, default=3.5, help="Flux dev's guidance input (others: ignored)"
    )
    p.add_argument("--sampler", "--sampler-name", dest="sampler_name", default="DPM++ 2M")
    p.add_argument("--scheduler", default="Automatic", help="schedule type (Karras, Exponential, ...)")
    p.add_argument("--seed", type=int, default=-1, help="-1: random (the chosen seed is recorded)")
    p.add_argument("--subseed", type=int, default=-1, help="variation seed")
    p.add_argument("--subseed-strength", type=float, default=0.0, help="variation strength 0..1")
    p.add_argument("--seed-resize-from-w", type=int, default=-1)
    p.add_argument("--seed-resize-from-h", type=int, default=-1)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--n-iter", "--batch-count", dest="n_iter", type=int, default=1)
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--model", "--checkpoint", dest="checkpoint", default=None, help="title, name or hash")
    p.add_argument("--vae", default=None, help="VAE file name (default: the checkpoint's own)")
    p.add_argument(
        "--module", dest="modules", action="append", default=[],
        help="a text encoder or VAE file a split SD3/Flux model takes (repeatable; default: found by name)",
    )  # fmt: skip
    p.add_argument(
        "--style", dest="styles", action="append", default=[], help="a style from styles.csv (repeatable)"
    )
    flags.add_folder_flags(p)
    flags.add_device_flags(p)
    p.set_defaults(listen=False, server_name=None, port=7860, api=False)
    return p


def main(argv: Sequence[str]) -> int:
    try:
        ns = build_parser().parse_args(list(argv))
        flags.check_common(ns)
    except flags.FlagError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    offline.apply()
    from webui.core.config import AppConfig
    from webui.core.devices import choose_precision, device_notes
    from webui.core.engine import Engine
    from webui.core.models.checkpoint_file import CheckpointError
    from webui.core.types import RequestError, Txt2ImgRequest

    fields = {k: getattr(ns, k) for k in Txt2ImgRequest.field_names() if hasattr(ns, k)}
    fields["styles"] = tuple(ns.styles)
    fields["modules"] = tuple(ns.modules)
    request = Txt2ImgRequest(**fields)
    config = AppConfig.from_flags(ns)
    precision = choose_precision(config)
    for note in device_notes(config, precision):
        print(f"note: {note}", file=sys.stderr)
    engine = Engine(config)
    try:
        result = engine.run(request)
    except RequestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in result.paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
