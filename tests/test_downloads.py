"""Downloads against a real HTTP server on 127.0.0.1 (tests/download_server.py), never the internet:
a tiny checkpoint lands in its folder whole and verified; a dropped connection and a restart resume
with Range; a wrong hash, a redirect to a host off the list, an HTML page, a private address and a file
larger than the free disk are refused with a message naming the field, and nothing is left behind."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from tests.download_server import json_page, serving
from webui.core.config import AppConfig
from webui.core.downloads.fetch import (
    DownloadCancelled,
    DownloadFailed,
    DownloadStopped,
    Progress,
    download,
    staging_paths,
)
from webui.core.downloads.kinds import detect_kind
from webui.core.downloads.policy import HostPolicy
from webui.core.downloads.request import DownloadRequest
from webui.core.downloads.sources import Tokens, civitai_version
from webui.core.types import RequestError

LOOPBACK = HostPolicy(flag_hosts=("127.0.0.1",))


@pytest.fixture(scope="module")
def ckpt(tiny_files: dict[str, Path]) -> bytes:
    return tiny_files["sd1"].read_bytes()


def _lora() -> bytes:
    return save(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
        }
    )


def _config(tmp_path: Path) -> AppConfig:
    return AppConfig.for_data_dir(tmp_path)


def _leftovers(config: AppConfig) -> list[Path]:
    staging = config.models_dir / ".downloads"
    return sorted(staging.iterdir()) if staging.exists() else []


def test_a_checkpoint_lands_in_its_folder_whole(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    seen: list[Progress] = []
    with serving() as s:
        s.files["/m/tiny.safetensors"] = ckpt
        got = download(
            DownloadRequest(url=s.base + "/m/tiny.safetensors"), config, LOOPBACK, progress=seen.append
        )
    assert got.path == config.ckpt_dirs[0] / "tiny.safetensors"
    assert got.path.read_bytes() == ckpt
    assert (got.kind, got.sha256, got.size) == ("checkpoint", hashlib.sha256(ckpt).hexdigest(), len(ckpt))
    assert got.verified == ""  # this server publishes no hash
    assert seen[-1].done == seen[-1].total == len(ckpt)
    assert _leftovers(config) == []


def test_a_lora_goes_to_the_lora_folder_and_a_given_name_is_used(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with serving() as s:
        s.files["/x"] = _lora()
        got = download(DownloadRequest(url=s.base + "/x", filename="style.safetensors"), config, LOOPBACK)
    assert got.path == config.lora_dirs[0] / "style.safetensors"
    assert got.kind == "lora"


def test_a_dropped_connection_resumes_with_a_range_request(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    with serving() as s:
        s.files["/drop.safetensors"] = ckpt
        s.drops["/drop.safetensors"] = 1
        got = download(DownloadRequest(url=s.base + "/drop.safetensors"), config, LOOPBACK)
        ranges = s.ranges("/drop.safetensors")
    assert got.path.read_bytes() == ckpt
    assert ranges[0] == ""
    assert len(ranges) == 2 and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0
    assert _leftovers(config) == []


def test_drops_that_each_bring_bytes_do_not_use_up_the_retries(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    with serving() as s:
        s.files["/flaky.safetensors"] = ckpt
        s.drops["/flaky.safetensors"] = 4
        got = download(DownloadRequest(url=s.base + "/flaky.safetensors"), config, LOOPBACK, retries=2)
        assert len(s.ranges("/flaky.safetensors")) == 5
    assert got.path.read_bytes() == ckpt


def test_a_restart_resumes_from_the_part_on_disk(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    request_path = "/slow.safetensors"
    with serving() as s:
        s.files[request_path] = ckpt
        s.slow[request_path] = 0.01
        request = DownloadRequest(url=s.base + request_path)
        progressed = threading.Event()

        def note(p: Progress) -> None:
            if p.done >= 256 << 10:
                progressed.set()

        with pytest.raises(DownloadStopped):  # a shutdown: the part is kept for the next run
            download(
                request, config, LOOPBACK, progress=note, stop=lambda: "stop" if progressed.is_set() else None
            )
        part, _ = staging_paths(config, request)
        kept = part.stat().st_size
        assert 0 < kept < len(ckpt)
        s.slow.clear()
        got = download(request, config, LOOPBACK)
        assert s.ranges(request_path)[-1] == f"bytes={kept}-"
    assert got.path.read_bytes() == ckpt
    assert _leftovers(config) == []


def test_a_server_without_ranges_starts_over(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    with serving() as s:
        s.files["/n.safetensors"] = ckpt
        s.drops["/n.safetensors"] = 1
        s.no_ranges.add("/n.safetensors")
        got = download(DownloadRequest(url=s.base + "/n.safetensors"), config, LOOPBACK)
    assert got.path.read_bytes() == ckpt


def test_a_cancel_leaves_nothing(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    with serving() as s:
        s.files["/slow.safetensors"] = ckpt
        s.slow["/slow.safetensors"] = 0.01
        started = threading.Event()
        with pytest.raises(DownloadCancelled):
            download(
                DownloadRequest(url=s.base + "/slow.safetensors"),
                config,
                LOOPBACK,
                progress=lambda p: started.set(),
                stop=lambda: "cancel" if started.is_set() else None,
            )
    assert _leftovers(config) == []
    assert not (config.ckpt_dirs[0] / "slow.safetensors").exists()


def test_a_wrong_hash_is_refused_and_deleted(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    with serving() as s:
        s.files["/m.safetensors"] = ckpt
        with pytest.raises(RequestError) as e:
            download(DownloadRequest(url=s.base + "/m.safetensors", sha256="ab" * 32), config, LOOPBACK)
    assert e.value.field == "sha256" and "the request gives" in e.value.message
    assert _leftovers(config) == [] and not (config.ckpt_dirs[0] / "m.safetensors").exists()


def test_the_hash_hugging_face_publishes_is_checked(tmp_path: Path, ckpt: bytes) -> None:
    """HF answers a resolve link with a redirect to its CDN carrying X-Linked-Etag: the file's sha256."""
    config = _config(tmp_path)
    good = hashlib.sha256(ckpt).hexdigest()
    with serving() as s:
        s.files["/cdn/blob"] = ckpt
        for repo, digest in (("good", good), ("bad", "cd" * 32)):
            path = f"/{repo}/resolve/main/{repo}.safetensors"
            s.redirects[path] = "/cdn/blob"
            s.headers[path] = {"X-Linked-Etag": f'"{digest}"'}
        got = download(DownloadRequest(url=s.base + "/good/resolve/main/good.safetensors"), config, LOOPBACK)
        assert (got.verified, got.path.name) == ("source", "good.safetensors")
        with pytest.raises(RequestError) as e:
            download(DownloadRequest(url=s.base + "/bad/resolve/main/bad.safetensors"), config, LOOPBACK)
    assert e.value.field == "sha256" and "the source publishes" in e.value.message
    assert not (config.ckpt_dirs[0] / "bad.safetensors").exists() and _leftovers(config) == []


def test_a_redirect_to_a_host_off_the_list_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with serving() as s:
        s.redirects["/go"] = "http://sfumato-elsewhere.example/model.safetensors"
        with pytest.raises(RequestError) as e:
            download(DownloadRequest(url=s.base + "/go"), config, LOOPBACK)
        assert s.ranges("/go") == [""]
    message = e.value.message
    assert e.value.field == "url" and "sfumato-elsewhere.example is not on the download allow-list" in message
    assert message.startswith("127.0.0.1 redirected to http://sfumato-elsewhere.example/model.safetensors")
    assert _leftovers(config) == []


def test_an_html_page_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    page = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    with serving() as s:
        s.pages["/login"] = ("text/html; charset=utf-8", page)
        s.pages["/sneaky.safetensors"] = ("application/octet-stream", b"\n  " + page)
        for path, kind in (("/login", ""), ("/sneaky.safetensors", ""), ("/sneaky.safetensors", "lora")):
            with pytest.raises(RequestError) as e:
                download(DownloadRequest(url=s.base + path, kind=kind), config, LOOPBACK)
            assert e.value.field == "url" and "web page" in e.value.message
    assert (
        _leftovers(config) == [] and not any(config.ckpt_dirs[0].glob("*"))
        if config.ckpt_dirs[0].exists()
        else True
    )


def test_a_file_larger_than_the_free_disk_is_refused_before_writing(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with serving() as s:
        s.claims["/huge.safetensors"] = 1 << 60  # an exabyte: no disk here has it free
        with pytest.raises(DownloadFailed) as e:
            download(DownloadRequest(url=s.base + "/huge.safetensors"), config, LOOPBACK)
    assert "not enough disk space" in str(e.value)
    assert _leftovers(config) == []


def test_a_taken_name_is_refused_early(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    config.ckpt_dirs[0].mkdir(parents=True)
    (config.ckpt_dirs[0] / "mine.safetensors").write_bytes(b"someone else's model")
    with serving() as s:
        s.files["/mine.safetensors"] = ckpt
        with pytest.raises(RequestError) as e:
            download(DownloadRequest(url=s.base + "/mine.safetensors"), config, LOOPBACK)
    assert e.value.field == "filename" and "already exists" in e.value.message
    assert (config.ckpt_dirs[0] / "mine.safetensors").read_bytes() == b"someone else's model"
    assert _leftovers(config) == []


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("ftp://huggingface.co/x.safetensors", "url"),
        ("file:///etc/passwd", "url"),
        ("https://user:pw@huggingface.co/x", "url"),
        ("https://civitai.com/api/download/models/1?token=abc", "url"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, field: str) -> None:
    with pytest.raises(RequestError) as e:
        DownloadRequest(url=url).validate()
    assert e.value.field == field


def test_other_bad_fields() -> None:
    for request, field in (
        (DownloadRequest(url="https://hf.co/x", sha256="xyz"), "sha256"),
        (DownloadRequest(url="https://hf.co/x", kind="hypernetwork"), "kind"),
        (DownloadRequest(url="https://hf.co/x", filename="../evil.safetensors"), "filename"),
        (DownloadRequest(url="https://hf.co/x", filename="notes.txt"), "filename"),
    ):
        with pytest.raises(RequestError) as e:
            request.validate()
        assert e.value.field == field


def test_hosts_off_the_list_and_private_addresses_are_refused() -> None:
    policy = HostPolicy(setting_hosts=("mirror.example", "localhost", "127.0.0.1"))
    with pytest.raises(RequestError, match="not on the download allow-list"):
        policy.addresses("elsewhere.example", 443)
    with pytest.raises(RequestError, match="private or local address"):
        policy.addresses("localhost", 80)  # the real resolver: loopback
    with pytest.raises(RequestError, match="private or local address"):
        policy.addresses("127.0.0.1", 80)  # the setting may add hosts, never local ones
    assert HostPolicy(flag_hosts=("127.0.0.1",)).addresses("127.0.0.1", 80) == ["127.0.0.1"]
    # a name resolving to a link-local or private address, as an attacker's DNS may answer
    fake = HostPolicy(setting_hosts=("mirror.example",), resolver=lambda h, p: ["10.1.2.3"])
    with pytest.raises(RequestError, match="private or local address"):
        fake.addresses("cdn.mirror.example", 443)
    public = HostPolicy(resolver=lambda h, p: ["2606:4700::1"])
    assert public.addresses("huggingface.co", 443) == ["2606:4700::1"]
    with pytest.raises(RequestError):
        HostPolicy(resolver=lambda h, p: ["::ffff:169.254.1.1"]).addresses("cdn-lfs.hf.co", 443)


def test_a_civitai_version_is_looked_up_for_its_hash_and_name(tmp_path: Path, ckpt: bytes) -> None:
    config = _config(tmp_path)
    digest = hashlib.sha256(ckpt).hexdigest()
    with serving() as s:
        s.files["/files/blob"] = ckpt
        version = {
            "id": 7,
            "files": [
                {"name": "notes.txt", "type": "Training Data", "hashes": {}},
                {
                    "name": "cv-model.safetensors",
                    "type": "Model",
                    "primary": True,
                    "sizeKB": len(ckpt) / 1024,
                    "hashes": {"SHA256": digest.upper()},
                    "downloadUrl": s.base + "/files/blob",
                },
            ],
        }
        s.pages["/api/v1/model-versions/7"] = json_page(version)
        s.pages["/api/v1/models/3"] = json_page({"modelVersions": [version]})
        assert civitai_version(s.base + "/models/3/some-slug", ("127.0.0.1",)) == ("model", "3")
        got = download(
            DownloadRequest(url=s.base + "/models/3/some-slug"),
            config,
            LOOPBACK,
            civitai_hosts=("127.0.0.1",),
        )
    assert (got.path.name, got.verified, got.sha256) == ("cv-model.safetensors", "source", digest)
    assert civitai_version("https://civitai.com/api/download/models/99") == ("version", "99")
    assert civitai_version("https://civitai.com/models/5/x?modelVersionId=12") == ("version", "12")
    assert civitai_version("https://huggingface.co/models/5") is None


def test_tokens_go_only_to_their_own_host() -> None:
    tokens = Tokens(hf="hf_secret", civitai="cv_secret")
    assert tokens.headers_for("huggingface.co") == {"Authorization": "Bearer hf_secret"}
    assert tokens.headers_for("civitai.com") == {"Authorization": "Bearer cv_secret"}
    assert tokens.headers_for("cdn-lfs.hf.co") == {}
    assert tokens.headers_for("evil.example") == {}
    assert "hf_secret" not in tokens.redact("failed with hf_secret")


def test_kinds_are_read_from_the_tensor_names(tiny_files: dict[str, Path]) -> None:
    from webui.core.models.checkpoint_file import tensor_shapes

    for arch, path in tiny_files.items():
        assert detect_kind(tensor_shapes(path)) == "checkpoint", arch
    cases = {
        "lora": {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 32)},
        "vae": {
            "encoder.down.0.block.0.conv1.weight": (8, 8, 3, 3),
            "decoder.up.0.block.0.conv1.weight": (8,),
        },
        "text_encoder": {"text_model.encoder.layers.0.self_attn.q_proj.weight": (8, 8)},
        "embedding": {"emb_params": (2, 768)},
        "controlnet": {"control_model.input_hint_block.0.weight": (16, 3, 3, 3)},
        "upscaler": {"conv_first.weight": (64, 3, 3, 3), "body.0.rdb1.conv1.weight": (32, 64, 3, 3)},
    }
    for kind, shapes in cases.items():
        assert detect_kind(shapes) == kind, kind
    assert detect_kind({"something.else": (3,), "other": (2,)}) is None


def test_the_flag_takes_host_names_and_addresses_only() -> None:
    from webui.flags import FlagError, parse_flags

    assert parse_flags(["--download-hosts", "Mirror.LAN, 127.0.0.1,[::1]"]).download_hosts == (
        "mirror.lan",
        "127.0.0.1",
        "::1",
    )
    for bad in ("bad host", "http://x.org", ","):
        with pytest.raises(FlagError, match="download-hosts"):
            parse_flags(["--download-hosts", bad])
