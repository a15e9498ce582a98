"""config.json: typed A1111 keys, unknown keys kept, corrupt files set aside, atomic saves."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.netguard import sitecustomize as netguard
from webui.core.config import AppConfig
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.settings import SECRET_KEYS, SPECS, Settings, SettingsStore
from webui.core.types import RequestError

ROOT = Path(__file__).resolve().parents[1]

A1111_CONFIG = {
    "sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 2,
    "samples_format": "jpg",
    "eta_noise_seed_delta": 31337,
    "s_churn": 0,  # an int where a float is expected: fine
    "quicksettings_list": ["sd_model_checkpoint", "sd_vae"],  # unknown to us: kept as is
    "ui_reorder_list": [],
    "face_restoration_model": "CodeFormer",
    "nested": {"a": [1, 2, {"b": None}], "unicode": "café ☕"},
}


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    s = Settings.load(tmp_path / "config.json")
    assert s.problem is None
    assert s.get("CLIP_stop_at_last_layers") == 1 and s.get("samples_format") == "png"
    assert s.get("sd_model_checkpoint") is None and s.get("sd_vae") == "Automatic"
    assert set(SPECS) - SECRET_KEYS <= set(s.as_dict())
    with pytest.raises(KeyError):
        s.get("no_such_setting")


def test_a1111_file_is_read_and_unknown_keys_written_back_untouched(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(A1111_CONFIG), encoding="utf-8")
    s = Settings.load(path)
    assert s.problem is None
    assert s.get("CLIP_stop_at_last_layers") == 2 and s.get("samples_format") == "jpg"
    assert s.get("s_churn") == 0.0 and isinstance(s.get("s_churn"), float)
    assert s.get("quicksettings_list") == ["sd_model_checkpoint", "sd_vae"]
    options = s.as_dict()
    assert options["face_restoration_model"] == "CodeFormer" and options["jpeg_quality"] == 80
    changed = s.updated({"jpeg_quality": 95})
    changed.save()
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written == {**A1111_CONFIG, "jpeg_quality": 95}
    assert Settings.load(path).get("jpeg_quality") == 95


@pytest.mark.parametrize(
    "content",
    [b'{"sd_vae": "Automatic", ', b"", b"[1, 2, 3]", b"\xff\xfe\x00garbage", b"null"],
    ids=["truncated", "empty", "list", "not-utf8", "null"],
)
def test_corrupt_file_is_set_aside_and_start_goes_on(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    s = Settings.load(path)
    assert s.problem is not None and "moved to config.json.corrupt-" in s.problem
    assert s.get("CLIP_stop_at_last_layers") == 1
    aside = list(tmp_path.glob("config.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    assert not path.exists()
    s.updated({"CLIP_stop_at_last_layers": 3}).save()
    assert json.loads(path.read_text()) == {"CLIP_stop_at_last_layers": 3}
    path.write_bytes(content)  # damaged again in the same second: a second name, nothing overwritten
    assert Settings.load(path).problem is not None
    assert len(list(tmp_path.glob("config.json.corrupt-*"))) == 2


def test_bad_known_values_in_the_file_are_reported_not_used_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"CLIP_stop_at_last_layers": 99, "randn_source": "GPU", "x": 1}))
    s = Settings.load(path)
    assert s.problem is not None
    assert "CLIP_stop_at_last_layers" in s.problem and "randn_source" in s.problem
    assert s.get("CLIP_stop_at_last_layers") == 1 and s.get("randn_source") == "CPU"
    s.updated({"x": 2}).save()
    assert json.loads(path.read_text()) == {"CLIP_stop_at_last_layers": 99, "randn_source": "GPU", "x": 2}


@pytest.mark.parametrize(
    "key, value",
    [
        ("CLIP_stop_at_last_layers", 0),
        ("CLIP_stop_at_last_layers", "2"),
        ("CLIP_stop_at_last_layers", True),  # a bool is not a number here
        ("eta_noise_seed_delta", 2**40),
        ("samples_format", "bmp"),
        ("samples_save", "yes"),
        ("s_noise", float("nan")),
        ("jpeg_quality", 101),
        ("outdir_samples", "../../etc"),
        ("outdir_txt2img_samples", "/etc/cron.d"),
        ("outdir_grids", "C:\\Windows"),
        ("outdir_txt2img_grids", "outputs/ok/../../up"),
        ("outdir_samples", "my/images"),  # not under outputs/: images are served only from there
        ("outdir_img2img_samples", "a\x00b"),
        ("sd_vae", None),
        ("unknown_key", float("inf")),
        ("unknown_key", object()),
    ],
)
def test_updates_are_validated_and_name_the_key(tmp_path: Path, key: str, value: object) -> None:
    path = tmp_path / "config.json"
    store = SettingsStore(path)
    store.update({"jpeg_quality": 90})
    before = path.read_bytes()
    with pytest.raises(RequestError) as e:
        store.update({"samples_format": "webp", key: value})  # one bad key: nothing applied
    assert e.value.field == key
    assert path.read_bytes() == before
    assert store.current.get("samples_format") == "png" and store.current.get("jpeg_quality") == 90


def test_good_values_are_accepted(tmp_path: Path) -> None:
    s = Settings.load(tmp_path / "config.json").updated(
        {
            "outdir_samples": "outputs/my/images",
            "s_tmax": 5,
            "sd_model_checkpoint": None,
            "eta_noise_seed_delta": 31337,
            "some_a1111_option": {"kept": [1, 2]},
        }
    )
    assert s.get("outdir_samples") == "outputs/my/images" and s.get("s_tmax") == 5.0
    assert s.get("eta_noise_seed_delta") == 31337 and s.get("some_a1111_option") == {"kept": [1, 2]}


def test_checkpoint_and_vae_are_checked_against_the_real_model_folder(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    manager = ModelManager(AppConfig.for_data_dir(tiny_data_dir, cache_dir=tmp_path / "cache"), Precision())
    manager.refresh()
    s = Settings.load(tmp_path / "config.json")
    title = manager.resolve("tiny-sd1").title
    assert s.updated({"sd_model_checkpoint": title}, manager.resolve).get("sd_model_checkpoint") == title
    with pytest.raises(RequestError) as e:
        s.updated({"sd_model_checkpoint": "nope.safetensors"}, manager.resolve)
    assert e.value.field == "sd_model_checkpoint" and "tiny-sd1" in str(e.value)  # lists valid names
    with pytest.raises(RequestError) as e:
        s.updated({"sd_vae": "missing.vae.pt"}, validate_vae=manager.resolve_vae)
    assert e.value.field == "sd_vae"
    assert s.updated({"sd_vae": "Automatic"}, validate_vae=manager.resolve_vae).get("sd_vae") == "Automatic"


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    store = SettingsStore(path)

    def writer(i: int) -> None:
        for j in range(10):
            store.update({f"key_{i}_{j}": j})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    on_disk = json.loads(path.read_text())
    assert {f"key_{i}_{j}" for i in range(4) for j in range(10)} <= set(on_disk)
    assert store.current.as_dict() == {**store.current.as_dict(), **on_disk}


def test_the_store_is_what_the_api_and_the_studio_read(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"jpeg_quality": 500, "quicksettings_list": ["sd_vae"]}))
    store = SettingsStore(path)
    assert store.problem is not None and "jpeg_quality" in store.problem  # bad value: reported, not used
    assert store.get("jpeg_quality") == 80 and store.get("quicksettings_list") == ["sd_vae"]
    assert store.get("no_such_option") is None  # A1111 clients ask for options they know
    seen: list[str] = []
    store.update({"sd_vae": "my.vae.pt"}, None, seen.append)  # the API passes both checks by position
    assert seen == ["my.vae.pt"] and store.as_dict()["sd_vae"] == "my.vae.pt"
    assert json.loads(path.read_text())["sd_vae"] == "my.vae.pt"


def test_save_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o600)
    Settings.load(path).updated({"jpeg_quality": 70}).save()
    assert path.stat().st_mode & 0o777 == 0o600
    fresh = tmp_path / "new" / "config.json"
    Settings.load(fresh).updated({"jpeg_quality": 70}).save()
    assert fresh.stat().st_mode & 0o777 == 0o644


@pytest.mark.slow
def test_kill_9_during_saves_never_leaves_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"counter": 0, "keep": "me"}))
    rng = random.Random(1)
    env = netguard.child_env(dict(os.environ, PYTHONPATH=str(ROOT)))
    last = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.jobs_helpers.settings_writer", str(path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        s = Settings.load(path)
        assert s.problem is None, s.problem
        data = json.loads(path.read_text())
        assert data["keep"] == "me" and len(data["padding"]) == 65536
        assert s.get("jpeg_quality") == 1 + data["counter"] % 100
        assert data["counter"] >= max(last, 1)  # each run starts from the previous run's last save
        last = data["counter"]
    assert list(tmp_path.glob("config.json.corrupt-*")) == []
