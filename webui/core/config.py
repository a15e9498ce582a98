"""AppConfig: everything fixed at start-up (folders, network, device flags), frozen.

Built once from the command-line flags and handed down in arguments; nothing reads flags or the
environment anywhere else.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_CACHE_GB = 8.0


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class AppConfig:
    data_dir: Path
    ckpt_dirs: tuple[Path, ...]
    vae_dirs: tuple[Path, ...]
    lora_dirs: tuple[Path, ...]
    embeddings_dir: Path
    outputs_dir: Path
    cache_dir: Path
    settings_path: Path
    styles_path: Path
    hashing: bool = True
    use_cpu: bool = False
    precision: str = "autocast"  # full | autocast | half | bf16
    no_half: bool = False
    no_half_vae: bool = False
    model_cache_bytes: int = int(DEFAULT_MODEL_CACHE_GB * 2**30)
    listen: bool = False
    server_name: str | None = None
    port: int = 7860
    api: bool = False
    text_encoder_dirs: tuple[Path, ...] = ()  # SD3/Flux text encoders kept apart (clip_l, clip_g, t5xxl)
    batch_mode: str = "auto"  # auto | batched | per-image: how the denoiser sees a batch (devices.per_image)
    tiled_vae: str = "auto"  # auto | on | off: when the VAE works in tiles (tasks.vae_tiles)
    vram: str = "auto"  # auto | none | medvram | lowvram: parts offloaded to RAM (devices.resolve_vram)
    compile: bool = False  # --compile: the denoiser through torch.compile (denoiser_compile)
    download_hosts: tuple[str, ...] = ()  # --download-hosts: extra download hosts (may be on the LAN)
    civitai_url: str = (
        "https://civitai.com"  # --civitai-url: where "Fetch info" asks (a mirror, a test server)
    )

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def host(self) -> str:
        """The address to bind: loopback unless the user asked for more."""
        if self.server_name:
            return self.server_name
        return "0.0.0.0" if self.listen else "127.0.0.1"

    @classmethod
    def for_data_dir(cls, data_dir: Path | str, **overrides: object) -> AppConfig:
        """The A1111 layout under one folder (tests and scripts use this)."""
        d = Path(data_dir).resolve()
        base: dict[str, object] = dict(
            data_dir=d,
            ckpt_dirs=(d / "models" / "Stable-diffusion",),
            vae_dirs=(d / "models" / "VAE",),
            text_encoder_dirs=(d / "models" / "text_encoder",),
            lora_dirs=(d / "models" / "Lora", d / "models" / "LyCORIS"),
            embeddings_dir=d / "embeddings",
            outputs_dir=d / "outputs",
            cache_dir=d / "cache",
            settings_path=d / "config.json",
            styles_path=d / "styles.csv",
        )
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]

    @classmethod
    def from_flags(cls, ns: argparse.Namespace) -> AppConfig:
        data_dir = Path(ns.data_dir).expanduser() if ns.data_dir else _repo_root()
        cfg = cls.for_data_dir(data_dir)
        ckpt_dirs = cfg.ckpt_dirs + ((Path(ns.ckpt_dir).expanduser().resolve(),) if ns.ckpt_dir else ())
        vae_dirs = (Path(ns.vae_dir).expanduser().resolve(),) if ns.vae_dir else cfg.vae_dirs
        lora_dirs = (Path(ns.lora_dir).expanduser().resolve(),) if ns.lora_dir else cfg.lora_dirs
        emb = Path(ns.embeddings_dir).expanduser().resolve() if ns.embeddings_dir else cfg.embeddings_dir
        styles = Path(ns.styles_file).expanduser().resolve() if ns.styles_file else cfg.styles_path
        cache_gb = ns.model_cache_gb if ns.model_cache_gb is not None else DEFAULT_MODEL_CACHE_GB
        return cls.for_data_dir(
            data_dir,
            ckpt_dirs=ckpt_dirs,
            vae_dirs=vae_dirs,
            lora_dirs=lora_dirs,
            embeddings_dir=emb,
            styles_path=styles,
            hashing=not ns.no_hashing,
            use_cpu="all" in ns.use_cpu or "sd" in ns.use_cpu,
            precision=ns.precision,
            no_half=ns.no_half,
            no_half_vae=ns.no_half_vae,
            batch_mode=getattr(ns, "batch_mode", "auto"),
            tiled_vae=getattr(ns, "tiled_vae", "auto"),
            vram=getattr(ns, "vram", None) or "auto",
            compile=bool(getattr(ns, "compile", False)),
            model_cache_bytes=int(cache_gb * 2**30),
            listen=ns.listen,
            server_name=ns.server_name,
            port=ns.port,
            api=ns.api,
            download_hosts=tuple(getattr(ns, "download_hosts", None) or ()),
            civitai_url=getattr(ns, "civitai_url", None) or "https://civitai.com",
        )
