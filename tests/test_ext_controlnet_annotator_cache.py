"""Annotator networks kept in the extension's model cache (ExtensionModels, the ModelCache its ControlNets
share) and run on the device asked for: a second run reads no file, a file replaced on disk is read
again, the maps equal a fresh load's, several annotators sit in the cache together, and the device is
the job's, else the extension models'. Tiny real-layout files (tests/fixtures_annotators.py,
tests/fixtures_depth.py); the ExtensionModels and ModelCache are the real ones, and their `loads`
counts the files read."""

from __future__ import annotations

import importlib
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures_annotators import annotator_modules, write_annotators
from tests.fixtures_depth import write_depth_anything
from tests.test_ext_controlnet import b64, drawing
from webui.core.config import AppConfig
from webui.core.engine import Engine
from webui.core.models.cache import ModelCache
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import _randomize
from webui.core.types import Txt2ImgRequest
from webui.plugins.ext_models import ExtensionModels
from webui.plugins.host import PluginHost

FOLDER = "ControlNet/annotators"


@pytest.fixture(scope="module")
def cn(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    mods = annotator_modules(tmp_path_factory.mktemp("annot-cache-ext"))
    mods.depth_anything = importlib.import_module(f"{mods.models.__package__}.depth_anything")
    return mods


@pytest.fixture
def models_dir(cn: SimpleNamespace, tmp_path: Path) -> Path:
    """netG.pth, the three OpenPose files and the two Depth Anything files (fresh per
    test: one test replaces a file)."""
    d = tmp_path / "models"
    write_annotators(cn, d)
    write_depth_anything(d / FOLDER)
    return d


def run(cn: SimpleNamespace, module: str, models_dir: Path, nets: object = None) -> Image.Image:
    return cn.preprocess.run(module, drawing((96, 64)), 64, models_dir=models_dir, nets=nets)


@pytest.mark.parametrize(
    ("module", "files"),
    [
        ("lineart_anime", ("netG.pth",)),
        ("openpose_hand", ("body_pose_model.pth", "hand_pose_model.pth")),
        ("openpose_full", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")),
        ("depth_anything_v2", ("depth_anything_v2_vitl.safetensors",)),
    ],
)
def test_a_second_run_reads_no_file_and_equals_a_fresh_load(
    module: str, files: tuple[str, ...], cn: SimpleNamespace, models_dir: Path
) -> None:
    models = ExtensionModels(models_dir, ModelCache(2**30))
    nets = cn.annotator_files.Nets(models)
    first = run(cn, module, models_dir, nets)
    second = run(cn, module, models_dir, nets)
    fresh = run(cn, module, models_dir)  # no cache: read from the file now, on the CPU
    assert models.loads == {f"{FOLDER}/{f}": 1 for f in files}
    if not module.startswith("openpose"):  # random weights find nobody: the maps' test is the next one's
        assert np.asarray(first).max() > np.asarray(first).min()
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert np.array_equal(np.asarray(first), np.asarray(fresh))
    assert first.info == fresh.info  # openpose's pose JSON too


def test_annotators_coexist_in_the_cache_the_controlnets_use(cn: SimpleNamespace, models_dir: Path) -> None:
    models = ExtensionModels(models_dir, ModelCache(2**30))
    nets = cn.annotator_files.Nets(models)
    for module in ("openpose", "lineart_anime", "openpose_hand", "openpose", "lineart_anime"):
        run(cn, module, models_dir, nets)
    want = ("netG.pth", "body_pose_model.pth", "hand_pose_model.pth")  # openpose_hand shares the body net
    assert models.loads == {f"{FOLDER}/{f}": 1 for f in want}
    held = [k[1] for k in models.cache.lru_keys()]
    assert sorted(Path(p).name for p in held) == sorted(want)
    assert models.cache.used_bytes > 0
    # a hit builds nothing (a build that fails is never called); the held networks are on the CPU and
    # give what freshly loaded ones give
    folder = models_dir / FOLDER

    def refuse(sd: dict) -> torch.nn.Module:
        raise AssertionError("built again")

    rgb = np.asarray(drawing((96, 64)).convert("RGB"))
    with (
        nets.use(folder / "body_pose_model.pth", refuse) as body,
        nets.use(folder / "hand_pose_model.pth", refuse) as hand,
    ):
        assert isinstance(body, cn.openpose_net.BodyPoseNet) and not body.training
        assert {p.device for p in [*body.parameters(), *hand.parameters()]} == {torch.device("cpu")}
        fresh_body = cn.openpose_net.load_body_net(folder / "body_pose_model.pth")
        for ours, theirs in zip(
            cn.openpose_net.body_maps(body, rgb), cn.openpose_net.body_maps(fresh_body, rgb), strict=True
        ):
            assert np.array_equal(ours, theirs) and ours.max() > ours.min()
        fresh_hand = cn.openpose_hand.load_hand_net(folder / "hand_pose_model.pth")
        crop = np.ascontiguousarray(rgb[:64, :64, ::-1])
        ours = cn.openpose_hand.hand_maps(hand, crop)
        assert np.array_equal(ours, cn.openpose_hand.hand_maps(fresh_hand, crop)) and ours.max() > ours.min()


def test_a_file_replaced_on_disk_is_read_again(cn: SimpleNamespace, models_dir: Path) -> None:
    models = ExtensionModels(models_dir, ModelCache(2**30))
    nets = cn.annotator_files.Nets(models)
    before = np.asarray(run(cn, "lineart_anime", models_dir, nets))
    path = models_dir / FOLDER / "netG.pth"
    net = cn.lineart_anime.UnetGenerator(2)
    _randomize(net, torch.Generator().manual_seed(99))
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new version, even in one tick
    after = np.asarray(run(cn, "lineart_anime", models_dir, nets))
    assert models.loads == {f"{FOLDER}/netG.pth": 2}
    assert np.array_equal(after, np.asarray(run(cn, "lineart_anime", models_dir)))  # the new file's map
    assert not np.array_equal(after, before)
    run(cn, "lineart_anime", models_dir, nets)
    assert models.loads == {f"{FOLDER}/netG.pth": 2}  # the new version is cached in turn


def test_the_device_is_the_jobs_else_the_extension_models(cn: SimpleNamespace, models_dir: Path) -> None:
    af = cn.annotator_files
    gpu_host = ExtensionModels(models_dir, ModelCache(2**20), device="cuda:1")
    assert af.run_device() == torch.device("cpu")
    assert af.run_device(None, gpu_host) == torch.device("cuda:1")  # /controlnet/detect, Preview
    assert af.run_device("cuda:0", gpu_host) == torch.device("cuda:0")  # a job on another GPU
    assert af.run_device(torch.device("cpu"), gpu_host) == torch.device("cpu")  # a CPU worker
    assert af.Nets(gpu_host).run_device == torch.device("cuda:1")
    assert af.Nets(gpu_host, "cuda:0").run_device == torch.device("cuda:0")
    # the cache key holds the device: the same file asked for on another device is another entry
    cpu = ExtensionModels(models_dir, ModelCache(2**30), device="cuda:1")
    for device in ("cpu", torch.device("cpu")):
        run(cn, "lineart_anime", models_dir, af.Nets(cpu, device))
    assert cpu.loads == {f"{FOLDER}/netG.pth": 1}
    assert [k[4] for k in cpu.cache.lru_keys()] == ["cpu"]


def test_a_jobs_units_preprocess_through_the_cache(
    cn: SimpleNamespace, models_dir: Path, tiny_controlnet_files: dict
) -> None:
    listed = cn.models.list_models(tiny_controlnet_files["sd1", "ldm"].parents[1])
    [unit] = cn.units.parse_units([{"module": "openpose", "model": "tiny-cn-sd1-ldm-bare"}], models=listed)
    unit = replace(unit, image=drawing((96, 64)), processor_res=64)
    models = ExtensionModels(models_dir, ModelCache(2**30))
    nets = cn.annotator_files.Nets(models, torch.device("cpu"))  # what job.py gives: the job's device
    maps = []
    for _ in range(2):  # two jobs
        [ready] = cn.residuals.prepare_units(
            [unit], width=64, height=64, models=listed, load=cn.models.load_control_model,
            models_dir=models_dir, nets=nets,
        )  # fmt: skip
        maps.append(np.asarray(ready.control_map))
    assert models.loads == {f"{FOLDER}/body_pose_model.pth": 1}
    assert np.array_equal(maps[0], maps[1])
    assert np.array_equal(maps[0], np.asarray(run(cn, "openpose", models_dir)))


def test_detect_uses_the_extensions_own_cache(models_dir: Path, tmp_path: Path) -> None:
    data = models_dir.parent
    host = PluginHost.for_config(AppConfig.for_data_dir(data), include_pip=False)
    ext = host.extension("controlnet")
    detect = next(spec.endpoint for _, spec in host.routes() if spec.path == "/controlnet/detect")
    body = {"controlnet_module": "openpose", "controlnet_input_images": [b64(drawing((64, 64)))],
            "controlnet_processor_res": 64}  # fmt: skip
    first, second = detect(body), detect(body)
    assert first == second and len(first["images"]) == 1
    assert ext.context.models.loads == {f"{FOLDER}/body_pose_model.pth": 1}


def test_two_jobs_read_the_annotator_once(
    models_dir: Path, tiny_files: dict[str, Path], tiny_controlnet_files: dict
) -> None:
    data = models_dir.parent
    (data / "models" / "Stable-diffusion").mkdir()
    (data / "models" / "Stable-diffusion" / tiny_files["sd1"].name).symlink_to(tiny_files["sd1"])
    controlnet = tiny_controlnet_files["sd1", "ldm-bare"]
    (data / "models" / "ControlNet" / controlnet.name).symlink_to(controlnet)
    torch.set_num_threads(1)
    config = AppConfig.for_data_dir(data)
    manager = ModelManager(config, Precision())
    manager.refresh()
    host = PluginHost.for_config(config, include_pip=False)
    engine = Engine(config, manager, host)
    unit = {
        "module": "lineart_anime",
        "model": controlnet.stem,
        "image": drawing((64, 64)),
        "processor_res": 64,
    }
    request = Txt2ImgRequest(
        prompt="a cat", checkpoint="tiny-sd1", width=64, height=64, steps=2, seed=3,
        extension_args={"controlnet": {"_units": [unit]}},
    )  # fmt: skip
    images = [np.asarray(engine.run(request).images[0].image) for _ in range(2)]
    models = host.extension("controlnet").context.models
    assert models.loads[f"{FOLDER}/netG.pth"] == 1  # read by the first job only
    assert [k[4] for k in models.cache.lru_keys() if Path(k[1]).name == "netG.pth"] == ["cpu"]  # the job's
    assert np.array_equal(images[0], images[1])
