"""Job workers as Ray actors on a real local cluster (127.0.0.1, two single-thread CPU actors), started
once for the module by the server's own flags (--ray-local 2 --ray-threads 1): 16 jobs of 3 users,
images written by the server, kill -9 of an actor mid-job (retried once on another actor; a second
death fails the job), cancel reaching the actor, a model no worker has, a corrupt init image (422),
the server's extensions and settings in the actors, workers removed and added while jobs run, and no
Ray process left once the server stops."""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from PIL import Image

from tests.test_remote_face_copies import ListingReport
from tests.test_server_harness import Running, running_server, server_config
from webui.core.engine import Engine
from webui.core.jobs import JobQueue, JobState
from webui.core.jobs.remote import ImageMsg, RemoteImages, WorkerFault, WorkerInfo, read_png
from webui.core.models.components import Precision
from webui.core.models.manager import ModelManager
from webui.core.models.tiny import build_tiny, save_single_file
from webui.core.outputs.options import OutputOptions
from webui.core.tasks.extras import ExtrasRequest
from webui.core.types import Txt2ImgRequest

if importlib.util.find_spec("ray") is None:  # not imported here: ray_pool imports it under its lock-down
    pytest.skip("Ray is not installed: pip install -r requirements-ray.txt", allow_module_level=True)

FAST: dict[str, Any] = dict(width=64, height=64, steps=2, checkpoint="tiny-sd1", sampler_name="Euler")
APP_ONLY = "only-on-the-server"  # a checkpoint the server lists and no Ray worker has


@pytest.fixture(scope="module")
def srv(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The real server with `--ray-local 2 --ray-threads 1`; the server's own model folder also holds a
    checkpoint the workers' folder lacks. On exit: every process the cluster started is gone."""
    tmp = tmp_path_factory.mktemp("ray-server")
    app_dir = tmp / "app-models"
    ckpts = app_dir / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (ckpts / "tiny-sd1.safetensors").symlink_to(
        tiny_data_dir / "models" / "Stable-diffusion" / "tiny-sd1.safetensors"
    )
    save_single_file(build_tiny("sd1", seed=5), ckpts / f"{APP_ONLY}.safetensors")
    manager = ModelManager(server_config(app_dir, tmp), Precision())
    manager.refresh()
    flags = ["--api", "--ray-local", "2", "--ray-threads", "1"]
    me = psutil.Process()
    seen: dict[int, psutil.Process] = {}
    with running_server(tiny_data_dir, tmp, flags=flags, manager=manager) as running:
        seen.update((p.pid, p) for p in me.children(recursive=True))
        assert len(running.services.queue.remote_workers) == 2
        workers = list(running.services.queue.remote_workers.values())
        pids = {p.pid for p in seen.values()} | {me.pid}
        listening = [
            c.laddr for c in psutil.net_connections("inet") if c.pid in pids and c.status == "LISTEN"
        ]
        ray_ports = [a for a in listening if a.port != int(running.url.rsplit(":", 1)[1])]
        assert ray_ports and all(a.ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for a in ray_ports), (
            ray_ports
        )
        yield running
        seen.update((p.pid, p) for p in me.children(recursive=True))
    _, alive = psutil.wait_procs(list(seen.values()), timeout=60)
    assert not alive, f"Ray processes left running: {[p.pid for p in alive]}"
    for remote in workers:  # the actors wrote nothing of their own
        assert not (Path(tempfile.gettempdir()) / f"sfumato-ray-worker-{remote.info.pid}").exists()
    import ray

    assert not ray.is_initialized()


def _req(**kw: Any) -> Txt2ImgRequest:
    return Txt2ImgRequest(**{"prompt": "a red apple", "seed": 1, **FAST, **kw})


def _wait_for(predicate: Any, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _running_at(q: JobQueue, job_id: str, step: int) -> bool:
    info = q.get(job_id)
    assert not info.state.finished, f"the job ended before step {step}: {info.state} {info.error}"
    return info.state is JobState.RUNNING and info.progress.step >= step


def _actor_pid(q: JobQueue, job_id: str) -> int:
    worker = q.get(job_id).worker
    assert worker is not None
    return int(q.remote_workers[worker].info.pid)


def _all_ready(q: JobQueue) -> None:
    for remote in q.remote_workers.values():
        assert remote.wait_ready()


def test_sixteen_jobs_from_three_users_complete_on_both_actors_in_fair_order(srv: Running) -> None:
    q = srv.services.queue
    owners = ["alice"] * 8 + ["bob"] * 4 + ["carol"] * 4
    jobs = [
        q.submit(_req(seed=100 + n, prompt=f"{owner} apple {n}"), owner) for n, owner in enumerate(owners)
    ]
    done = [q.wait(j.id, timeout=600) for j in jobs]
    assert [i.state for i in done] == [JobState.DONE] * 16, [i.error for i in done]
    for job, info, owner in zip(jobs, done, owners, strict=True):
        assert info.owner == owner and len(info.images) == 1
        path = Path(info.images[0].path)
        assert path.is_file() and path.is_relative_to(srv.config.outputs_dir)  # written by the server
        assert q.file_owner(path) == owner
        assert info.images[0].infotext.startswith(job.request["prompt"])
        with Image.open(path) as im:
            assert im.size == (64, 64)
    assert len({i.images[0].path for i in done}) == 16
    assert set(Counter(i.worker for i in done)) == set(q.worker_ids)  # both actors served
    # fair, not first-come: alice queued 8 first, yet bob and carol each start 2 of the first 8 jobs (the
    # two idle actors may take alice's first two as she submits them; then the owners take turns)
    first = Counter(i.owner for i in sorted(done, key=lambda i: i.started or 0.0)[:8])
    assert first["bob"] >= 2 and first["carol"] >= 2, first


def test_an_actor_makes_the_same_picture_as_an_in_process_worker(srv: Running) -> None:
    q = srv.services.queue
    info = q.wait(q.submit(_req(seed=4242), "alice").id, timeout=300)
    assert info.state is JobState.DONE, info.error
    local = Engine(srv.config, srv.services.manager).run(_req(seed=4242))
    with Image.open(info.images[0].path) as remote:
        there = np.asarray(remote.convert("RGB")).astype(int)
    here = np.asarray(local.images[0].image.convert("RGB")).astype(int)
    assert np.abs(there - here).max() <= 2  # one torch thread there, several here: float sums may differ
    assert info.images[0].infotext.split("\n")[0] == local.images[0].infotext.split("\n")[0]
    assert "Seed: 4242" in info.images[0].infotext


def test_progress_and_previews_stream_back_from_the_actor(srv: Running) -> None:
    q = srv.services.queue
    job = q.submit(_req(seed=9, steps=12), "bob")
    info = q.wait(job.id, timeout=300)
    assert info.state is JobState.DONE, info.error
    _wait_for(lambda: q.event_position(job.id)[1])  # the final event follows the stored state
    kinds = [e.kind for e in q.events(job.id, 0, timeout=0)]
    assert kinds.count("progress") >= 12 and kinds[-1] == "done"
    assert q.latest_preview(job.id) is not None


def test_the_actor_runs_the_servers_extensions(srv: Running) -> None:
    """The wildcards extension (on by default) expands the template in the actor, as in the server."""
    q = srv.services.queue
    info = q.wait(q.submit(_req(seed=7, prompt="a {red|blue} apple"), "alice").id, timeout=300)
    assert info.state is JobState.DONE, info.error
    infotext = info.images[0].infotext
    assert infotext.split("\n")[0] in ("a red apple", "a blue apple"), infotext
    assert "Template: a {red|blue} apple" in infotext


def test_the_actor_reads_the_servers_settings_as_each_job_starts(srv: Running) -> None:
    q = srv.services.queue
    settings = srv.services.settings

    def preview_size() -> tuple[int, int]:
        job = q.submit(_req(seed=11, steps=3), "bob")
        info = q.wait(job.id, timeout=300)
        assert info.state is JobState.DONE, info.error
        png = q.latest_preview(job.id)
        assert png is not None
        with Image.open(io.BytesIO(png)) as im:
            return im.size

    before = settings.get("show_progress_type")
    try:
        settings.update({"show_progress_type": "Full"})  # the VAE: previews at the image's size
        assert preview_size() == (64, 64)
        settings.update({"show_progress_type": "Approx cheap"})  # latent colours: the latents' size
        assert preview_size() == (8, 8)
    finally:
        settings.update({"show_progress_type": before})


def test_img2img_sends_its_init_image_to_the_actor_over_the_api(srv: Running) -> None:
    picture = Image.new("RGB", (64, 64), (200, 30, 30))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    init = base64.b64encode(buf.getvalue()).decode()
    body = {"prompt": "a red square", "steps": 4, "width": 64, "height": 64, "seed": 3,
            "init_images": [init], "denoising_strength": 0.3}  # fmt: skip
    with srv.client(timeout=300) as c:
        r = c.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert out.size == (64, 64)
    assert np.asarray(out.convert("RGB"))[..., 0].mean() > np.asarray(out.convert("RGB"))[..., 2].mean()


def test_an_extras_job_runs_on_an_actor_and_lands_in_extras_images(srv: Running) -> None:
    q = srv.services.queue
    picture = Image.new("RGB", (16, 12), (10, 200, 30))
    request = ExtrasRequest.from_images([picture], upscaler_1="Lanczos", upscaling_resize=2.0)
    info = q.wait(q.submit(request, "carol").id, timeout=300)
    assert info.state is JobState.DONE, info.error
    (image,) = info.images
    path = Path(image.path)
    assert path.parent == srv.config.outputs_dir / "extras-images" and q.file_owner(path) == "carol"
    with Image.open(path) as im:
        assert im.size == (32, 24)


def test_a_corrupt_init_image_is_refused_at_submit_with_422(srv: Running) -> None:
    q = srv.services.queue
    before = len(q.list(limit=1000))
    body = {"prompt": "x", "steps": 2, "width": 64, "height": 64,
            "init_images": [base64.b64encode(b"\x89PNG\r\n\x1a\n not really").decode()]}  # fmt: skip
    with srv.client() as c:
        r = c.post("/sdapi/v1/img2img", json=body)
    assert r.status_code == 422, r.text
    assert "init_images" in r.text
    assert len(q.list(limit=1000)) == before  # nothing queued, nothing sent to an actor


def test_a_model_no_worker_has_fails_naming_it_while_others_run(srv: Running) -> None:
    q = srv.services.queue
    missing = q.submit(_req(checkpoint=APP_ONLY), "carol")  # the server knows it: accepted at submit
    fine = q.submit(_req(seed=11), "carol")
    bad, good = q.wait(missing.id, timeout=300), q.wait(fine.id, timeout=300)
    assert bad.state is JobState.FAILED and APP_ONLY in (bad.error or "")
    assert "no Ray worker" in (bad.error or "") and bad.error_field == "checkpoint"
    assert good.state is JobState.DONE, good.error


def test_cancel_reaches_the_job_running_in_an_actor(srv: Running) -> None:
    q = srv.services.queue
    _all_ready(q)
    job = q.submit(_req(seed=21, steps=400), "alice")
    _wait_for(lambda: _running_at(q, job.id, 2))
    worker = q.get(job.id).worker
    q.cancel(job.id, "alice")
    info = q.wait(job.id, timeout=300)
    assert info.state is JobState.CANCELLED and info.interrupted  # the actor stopped and said so
    assert info.progress.step < 400
    after = [q.submit(_req(seed=30 + n), "alice") for n in range(2)]  # both actors take jobs again
    assert all(q.wait(j.id, timeout=300).state is JobState.DONE for j in after)
    assert worker in q.worker_ids


def test_skip_reaches_the_actor_and_the_next_batch_runs(srv: Running) -> None:
    q = srv.services.queue
    job = q.submit(_req(seed=50, steps=60, n_iter=2), "bob")
    _wait_for(lambda: _running_at(q, job.id, 2))
    assert q.get(job.id).progress.batch == 1
    q.skip(job.id, "bob")
    info = q.wait(job.id, timeout=300)
    assert info.state is JobState.DONE and not info.interrupted
    assert [i.seed for i in info.images] == [51]  # batch 1 (seed 50) skipped on the actor, batch 2 made


def test_an_actor_killed_mid_job_hands_the_job_to_the_other_one(srv: Running) -> None:
    q = srv.services.queue
    _all_ready(q)
    job = q.submit(_req(seed=77, steps=80), "bob")
    _wait_for(lambda: _running_at(q, job.id, 2))
    first = q.get(job.id).worker
    os.kill(_actor_pid(q, job.id), signal.SIGKILL)
    info = q.wait(job.id, timeout=600)
    assert info.state is JobState.DONE, info.error
    assert info.attempts == 2 and info.worker != first  # run once more, on the other actor
    assert any(w.startswith("retried on another worker: its Ray worker") for w in info.warnings)
    assert len(info.images) == 1 and Path(info.images[0].path).is_file()
    folder = Path(info.images[0].path).parent
    assert len(list(folder.glob("*-77.png"))) == 1  # one picture on disk, not one per attempt
    _all_ready(q)  # Ray restarted the killed actor
    again = q.wait(q.submit(_req(seed=78), "bob").id, timeout=300)
    assert again.state is JobState.DONE


def test_a_job_whose_actor_dies_twice_fails_with_a_clear_error(srv: Running) -> None:
    q = srv.services.queue
    _all_ready(q)
    job = q.submit(_req(seed=88, steps=80), "carol")
    _wait_for(lambda: _running_at(q, job.id, 2))
    os.kill(_actor_pid(q, job.id), signal.SIGKILL)
    _wait_for(lambda: q.get(job.id).attempts == 2 and _running_at(q, job.id, 2))
    os.kill(_actor_pid(q, job.id), signal.SIGKILL)
    info = q.wait(job.id, timeout=300)
    assert info.state is JobState.FAILED
    assert "Ray worker" in (info.error or "") and "died" in (info.error or "")
    assert "attempt 2" in (info.error or "")
    _all_ready(q)
    assert q.wait(q.submit(_req(seed=89), "carol").id, timeout=300).state is JobState.DONE


def test_workers_are_removed_after_their_job_and_added_while_jobs_run(srv: Running) -> None:
    """Over the API: a worker removed mid-job finishes that job, takes no other and its actor stops; the
    last worker cannot be removed; added workers take jobs at once; no room in the cluster is a 409."""
    q = srv.services.queue
    _all_ready(q)
    with srv.client() as http:
        listed = http.get("/api/v1/workers").json()["workers"]
        assert [w["kind"] for w in listed] == ["ray", "ray"] and {w["state"] for w in listed} == {"idle"}
        long = q.submit(_req(seed=301, steps=60), "alice")
        _wait_for(lambda: _running_at(q, long.id, 2))
        leaving = q.get(long.id).worker
        assert leaving is not None
        pid = q.remote_workers[leaving].info.pid
        answer = http.delete(f"/api/v1/workers/{leaving}")
        assert answer.status_code == 202, answer.text
        states = {w["id"]: w for w in http.get("/api/v1/workers").json()["workers"]}
        assert states[leaving]["state"] == "draining" and states[leaving]["job"] == long.id
        other = q.wait(q.submit(_req(seed=302), "bob").id, timeout=300)  # the other worker takes it
        assert other.state is JobState.DONE and other.worker != leaving
        finished = q.wait(long.id, timeout=300)
        assert finished.state is JobState.DONE and not finished.interrupted and finished.worker == leaving
        _wait_for(lambda: leaving not in q.worker_ids and not psutil.pid_exists(pid), timeout=120)
        (last,) = q.worker_ids
        refused = http.delete(f"/api/v1/workers/{last}")
        assert refused.status_code == 409 and "last worker" in refused.json()["detail"]
        assert http.delete("/api/v1/workers/nobody").status_code == 404
        added = http.post("/api/v1/workers", json={"count": 1})  # the freed CPU takes a new actor
        assert added.status_code == 201, added.text
        (new,) = added.json()["added"]
        assert set(q.worker_ids) == {last, new}
        jobs = [q.submit(_req(seed=303 + n, steps=12), "carol") for n in range(2)]
        done = [q.wait(j.id, timeout=300) for j in jobs]
        assert all(i.state is JobState.DONE for i in done), [i.error for i in done]
        assert new in {i.worker for i in done}
        full = http.post("/api/v1/workers", json={"count": 1})  # both CPUs are taken
        assert full.status_code == 409 and "no room" in full.json()["detail"]
        assert http.post("/api/v1/workers", json={"count": 0}).status_code == 422
    assert len(q.worker_ids) == 2


# -- the server's side of the messages, without a cluster ---------------------------------------------------


def test_an_unreadable_image_from_a_worker_is_a_worker_fault(tmp_path: Path) -> None:
    with pytest.raises(WorkerFault, match="unreadable image"):
        read_png(b"\x89PNG\r\n\x1a\n broken")
    images = RemoteImages(_req(), tmp_path / "job", OutputOptions(tmp_path / "out"), ListingReport())
    with pytest.raises(WorkerFault):
        images.add(ImageMsg(b"nope", 1, 1, "x"))
    assert not list(tmp_path.rglob("*.png"))  # nothing written for it


def test_images_the_request_asked_not_to_save_go_to_the_job_folder(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    report = ListingReport()
    images = RemoteImages(_req(save_images=False), tmp_path / "job", OutputOptions(tmp_path / "out"), report)
    images.add(ImageMsg(buf.getvalue(), 5, 5, "a cat\nSteps: 3"))
    (written,) = report.listed[-1]
    assert Path(written.path).parent == tmp_path / "job" and not (tmp_path / "out").exists()
    assert written.seed == 5 and written.infotext == "a cat\nSteps: 3"
    with Image.open(written.path) as im:
        assert im.info.get("parameters") == "a cat\nSteps: 3"


def test_a_worker_has_a_checkpoint_by_any_of_its_names_or_by_its_hash() -> None:
    sha = "f" * 64
    names = frozenset({"a.safetensors", "a", "a.safetensors [ffffffffff]", "ffffffffff", sha})
    info = WorkerInfo(1, "node", "cpu", (names,))
    assert info.has_checkpoint("a") and info.has_checkpoint("a.safetensors [ffffffffff]")
    assert info.has_checkpoint("a.safetensors [0000000000]")  # a title from another machine: its name
    assert not info.has_checkpoint("renamed.safetensors")
    assert info.has_checkpoint("renamed.safetensors", sha256=sha)  # same file under another name
    assert info.has_checkpoint(None)  # the default: any checkpoint
    assert not WorkerInfo(1, "node", "cpu", ()).has_checkpoint(None)
