"""Model library figures: card scan and search over many LoRA files; download throughput against plain
readers of the same local URL.

    python bench/library.py [--what all|cards|download] [--files 10000] [--mb 512] [--repeat 3] [--work DIR]

Cards (webui.core.library): writes `--files` header-only LoRA files in 10 subfolders (one in ten with a
sidecar `name.json` and a preview), then times a cold scan (every header read), a rescan of the unchanged
files (headers cached by path, size and mtime) and searches over the scanned cards (a name, a sidecar
word, a kind, a base model, several words), each the median of `--repeat` runs (at least 5).

Measured on the 2-core development VM shared with other jobs (load average 10 to 12), 10,000 files:
cold scan 0.95-1.9 s, rescan of unchanged files 0.35-0.40 s, word searches 8-22 ms, kind or base
filters under 1 ms.

Serves one safetensors file of `--mb` megabytes from a threaded HTTP server on 127.0.0.1 (the standard
library's, in this process) and fetches it with curl (when installed), with a plain urllib reader that
writes the bytes to a file, and with Sfumato's downloader (webui.core.downloads: host policy, sha256 while
writing, fsync, header read, rename into models/). Prints the best of `--repeat` runs of each in MB/s
and the downloader's ratio to each. Loopback has no network limit, so this measures the CPU and disk
work per byte (sha256, fsync), the worst case for the ratio. Never passes or fails.

Measured on the 2-core development VM shared with other jobs (load average about 13), 537 MB, three
runs of the script: 281, 175 and 133 MB/s; 1.35x, 0.96x and 0.59x curl; 0.60x, 0.49x and 0.43x the
urllib reader. The spread is the machine's load: rerun on an idle machine for a figure to quote.

(The issue's other library figures, gallery paging and search over 100,000 images, belong to the gallery,
which is not written yet.)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _write_file(path: Path, mb: int) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"emb_params": torch.zeros(mb * (1 << 20) // 2, dtype=torch.float16).view(-1, 1024)}, str(path))


def _best(run: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def _median_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2] * 1000


def bench_cards(work: Path, files: int, repeat: int) -> None:
    import json

    from webui.core.config import AppConfig
    from webui.core.library.cards import CardLibrary
    from webui.core.networks.tiny import write_header_only

    config = AppConfig.for_data_dir(work / "cards")
    lora = config.lora_dirs[0]
    if len(list(lora.rglob("*.safetensors"))) != files:
        shutil.rmtree(lora, ignore_errors=True)
        bases = ("sd_v1", "sdxl_base_v1-0", "flux1")
        for i in range(files):
            path = write_header_only(
                lora / f"set{i % 10}" / f"item-{i:05d}.safetensors", {"ss_base_model_version": bases[i % 3]}
            )
            if i % 10 == 0:
                path.with_suffix(".json").write_text(json.dumps({"activation text": f"trigger{i} inkstyle"}))
                path.with_name(f"item-{i:05d}.preview.png").write_bytes(b"\x89PNG")
    print(f"cards: {files} LoRA files in 10 folders ({files // 10} with a sidecar and a preview)")
    library = CardLibrary.for_config(config)
    t = time.perf_counter()
    library.refresh()
    cold = (time.perf_counter() - t) * 1000
    print(f"{'cold scan':>28}: {cold:8.1f} ms  ({len(library.cards())} cards)")
    print(f"{'rescan, unchanged files':>28}: {_median_ms(library.refresh, repeat):8.1f} ms")
    searches = {
        "search a name": ("item-04200", "", ""),
        "search a sidecar word": ("inkstyle", "", ""),
        "filter kind=lora": ("", "lora", ""),
        "filter base=sdxl": ("", "", "sdxl"),
        "search 2 words + base": ("set3 item-0", "", "flux"),
    }
    for label, (q, kind, base) in searches.items():
        found = len(library.search(q, kind, base))
        ms = _median_ms(lambda q=q, kind=kind, base=base: library.search(q, kind, base), repeat)
        print(f"{label:>28}: {ms:8.1f} ms  ({found} found)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=("all", "cards", "download"), default="all")
    p.add_argument("--files", type=int, default=10_000, help="LoRA files for the card figures")
    p.add_argument("--mb", type=int, default=512)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--work", default=None, help="a folder for the files (default: a temporary one)")
    ns = p.parse_args()
    work = Path(ns.work or tempfile.mkdtemp(prefix="sfumato-bench-library-"))
    if ns.what in ("all", "cards"):
        bench_cards(work, ns.files, max(ns.repeat, 5))
    if ns.what in ("all", "download"):
        bench_download(ns, work)
    if ns.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bench_download(ns: argparse.Namespace, work: Path) -> None:
    from webui.core.config import AppConfig
    from webui.core.downloads.fetch import download
    from webui.core.downloads.policy import HostPolicy
    from webui.core.downloads.request import DownloadRequest

    served = work / "served"
    served.mkdir(parents=True, exist_ok=True)
    source = served / "model.safetensors"
    if not source.exists() or source.stat().st_size < ns.mb * (1 << 20):
        _write_file(source, ns.mb)
    size = source.stat().st_size
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/model.safetensors"
    out = work / "plain.bin"
    config = AppConfig.for_data_dir(work / "data", download_hosts=("127.0.0.1",))
    policy = HostPolicy(flag_hosts=("127.0.0.1",))
    target = config.embeddings_dir / "model.safetensors"

    def plain() -> None:
        with urllib.request.urlopen(url) as r, open(out, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)

    def curl() -> None:
        subprocess.run(["curl", "-s", "-o", str(out), url], check=True)

    def ours() -> None:
        target.unlink(missing_ok=True)
        download(DownloadRequest(url=url, kind="embedding"), config, policy)

    print(
        f"file: {size / 1e6:.0f} MB served from 127.0.0.1 ({sys.platform}, python {sys.version.split()[0]})"
    )
    results = {}
    if shutil.which("curl"):
        results["curl"] = _best(curl, ns.repeat)
    results["urllib reader"] = _best(plain, ns.repeat)
    results["sfumato download"] = _best(ours, ns.repeat)
    for name, seconds in results.items():
        print(f"{name:>18}: {seconds:6.2f} s  {size / seconds / 1e6:7.0f} MB/s")
    mine = results["sfumato download"]
    for name in ("curl", "urllib reader"):
        if name in results:
            print(f"download throughput / {name}: {results[name] / mine:.2f}x")
    server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
