"""Checkpoint merges started by name (webui.core.models.merge_runs) and over HTTP (/api/v1/merges) on a
real 127.0.0.1 server: names resolved like every request, bad fields named, nothing overwritten, the
new model listed and usable, and only admins may merge when there are logins."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.test_server_harness import Running, make_manager, running_server
from webui.core.models.checkpoint_file import load_state_dict
from webui.core.models.merge import MergeError
from webui.core.models.merge_runs import MergeRuns, MergeSpec, default_name, plan_merge
from webui.core.models.tiny import build_tiny, save_single_file

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")
KEY = "model.diffusion_model.input_blocks.0.0.weight"


def _data_dir(root: Path) -> Path:
    ckpts = root / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (root / "models" / "VAE").mkdir()
    for name, seed in (("alpha", 1), ("beta", 2), ("gamma", 3)):
        save_single_file(build_tiny("sd1", seed=seed), ckpts / f"{name}.safetensors")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _data_dir(tmp_path_factory.mktemp("merge-data"))


@pytest.fixture()
def manager(data: Path, tmp_path: Path) -> Iterator[object]:
    m = make_manager(data, tmp_path)
    yield m
    for f in (data / "models" / "Stable-diffusion").glob("*merged*.safetensors"):
        f.unlink()
    for f in (data / "models" / "Stable-diffusion").glob("mine*.safetensors"):
        f.unlink()


def _field(spec: MergeSpec, manager: object) -> str:
    with pytest.raises(MergeError) as e:
        plan_merge(manager, spec)
    return e.value.field


def test_bad_specs_name_their_field(manager: object, data: Path) -> None:
    ok = dict(primary_model_name="alpha", secondary_model_name="beta")
    assert _field(MergeSpec(**{**ok, "primary_model_name": "nope"}), manager) == "primary_model_name"
    assert _field(MergeSpec(**{**ok, "secondary_model_name": ""}), manager) == "secondary_model_name"
    assert _field(MergeSpec(**ok, interp_method="Add difference"), manager) == "tertiary_model_name"
    assert _field(MergeSpec(**ok, interp_method="Average"), manager) == "interp_method"
    assert _field(MergeSpec(**ok, checkpoint_format="ckpt"), manager) == "checkpoint_format"
    assert _field(MergeSpec(**ok, custom_name="../escape"), manager) == "custom_name"
    assert _field(MergeSpec(**ok, custom_name="beta"), manager) == "custom_name"  # exists: never overwritten
    assert _field(MergeSpec(**ok, bake_in_vae="missing.vae.pt"), manager) == "bake_in_vae"
    # No interpolation needs only A
    request, meta = plan_merge(
        manager, MergeSpec(primary_model_name="alpha", interp_method="No interpolation")
    )
    assert request.secondary is None and request.output.parent == data / "models" / "Stable-diffusion"
    assert "alpha" in meta["sd_merge_models"]


def test_default_name_follows_a1111(manager: object) -> None:
    a, b, c = (manager.resolve(n) for n in ("alpha", "beta", "gamma"))  # type: ignore[attr-defined]
    spec = MergeSpec(interp_method="Weighted sum", multiplier=0.3)
    assert default_name(spec, a, b, None) == "alpha_0.7-beta_0.3-Weighted_sum-merged"
    spec = MergeSpec(interp_method="Add difference", multiplier=1.0)
    assert default_name(spec, a, b, c) == "alpha_1-beta-gamma-Add_difference-merged"


def test_a_merge_by_name_is_written_listed_and_mixes_the_sources(manager: object, data: Path) -> None:
    runs = MergeRuns(manager)
    titles_before = {f.title for f in manager.checkpoints()}  # type: ignore[attr-defined]
    status = runs.start(MergeSpec("alpha", "beta", multiplier=0.25, custom_name="mine"), "tester")
    assert status.state == "running" and status.output == "mine.safetensors"
    done = runs.wait(status.id, 60)
    assert done is not None and done.state == "done", done
    assert done.written == done.total > 100 and done.merged > 100
    out = data / "models" / "Stable-diffusion" / "mine.safetensors"
    folder = data / "models" / "Stable-diffusion"
    a, b, m = (load_state_dict(p) for p in (folder / "alpha.safetensors", folder / "beta.safetensors", out))
    torch.testing.assert_close(m[KEY], a[KEY] * 0.75 + b[KEY] * 0.25, rtol=0, atol=1e-6)
    new = {f.title for f in manager.checkpoints()} - titles_before  # type: ignore[attr-defined]
    assert [t.split(" ")[0] for t in new] == ["mine.safetensors"]
    assert runs.runs()[0].id == status.id and not runs.cancel(status.id)  # ended: nothing to cancel


# -- over HTTP ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("merge-srv")
    flags = ["--api", "--api-auth", "alice:pa,root:pr", "--admin", "root"]
    with running_server(data, tmp, flags=flags, manager=make_manager(data, tmp)) as r:
        yield r
    for f in (data / "models" / "Stable-diffusion").glob("*merged*.safetensors"):
        f.unlink()


def _wait(c: httpx.Client, run_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = c.get(f"/api/v1/merges/{run_id}").json()
        if status["state"] != "running":
            return dict(status)
        time.sleep(0.1)
    raise AssertionError("the merge did not end")


def test_api_merge_then_generate_with_the_new_model(srv: Running) -> None:
    body = {"primary_model_name": "alpha", "secondary_model_name": "beta", "multiplier": 0.5}
    with srv.client(auth=("alice", "pa")) as alice, srv.client(auth=("root", "pr")) as root:
        r = alice.post("/api/v1/merges", json=body)
        assert r.status_code == 403 and "only an admin" in r.json()["detail"]
        r = root.post("/api/v1/merges", json=body)
        assert r.status_code == 202, r.text
        status = _wait(root, r.json()["id"])
        assert (
            status["state"] == "done"
            and status["output"] == "alpha_0.5-beta_0.5-Weighted_sum-merged.safetensors"
        )
        assert alice.get("/api/v1/merges").json()[0]["id"] == r.json()["id"]  # everyone may read
        names = [m["model_name"] for m in alice.get("/sdapi/v1/sd-models").json()]
        assert "alpha_0.5-beta_0.5-Weighted_sum-merged" in names
        merged = "alpha_0.5-beta_0.5-Weighted_sum-merged"
        payload = {"prompt": "a kite", "steps": 2, "width": 64, "height": 64, "seed": 5,
                   "override_settings": {"sd_model_checkpoint": merged}}  # fmt: skip
        r = alice.post("/sdapi/v1/txt2img", json=payload)
        assert r.status_code == 200, r.text
        assert "Model: alpha_0.5-beta_0.5-Weighted_sum-merged" in r.json()["info"]
        again = root.post("/api/v1/merges", json=body)  # the same name again: refused, file kept
        assert again.status_code == 422 and again.json()["field"] == "custom_name"


def test_api_refuses_bad_fields_by_name(srv: Running) -> None:
    with srv.client(auth=("root", "pr")) as root:
        r = root.post("/api/v1/merges", json={"primary_model_name": "alpha", "secondary_model_name": "zzz"})
        assert r.status_code == 422 and r.json()["field"] == "secondary_model_name" and "alpha" in r.text
        r = root.post("/api/v1/merges", json={"primary_model_name": "alpha", "config_source": 1})
        assert r.status_code == 422 and "config_source" in r.text
        assert root.get("/api/v1/merges/doesnotexist").status_code == 404
