"""Extensions, LoRA browser and X/Y/Z plot in a real browser against the real server.

The data folder is this module's own: the tiny SD1 checkpoint, a tiny LoRA (written by the engine's
tiny-LoRA writer) and two throw-away extensions in `<data>/extensions`: `inverter` (an accordion whose
checkbox inverts the image and adds an infotext key) and `broken` (fails to import).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.browser.harness import (
    RunningStudio,
    generate,
    open_studio,
    reload,
    running_studio,
    set_number,
    wait_value,
)
from tests.test_plugins_host import BROKEN, write_extension

pytestmark = pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting'", "ignore:The copy keyword")

INVERTER = """
from PIL import ImageOps
from webui.plugins.api import Field, UiSection, hookimpl

@hookimpl
def register(registry):
    registry.add(UiSection(("txt2img", "img2img"), "Inverter", fields=(
        Field("invert", "checkbox", False, label="Invert the colours"),
        Field("amount", "slider", 1, minimum=0, maximum=3, step=1),
        Field("mode", "radio", "full", choices=("full", "half")),
    )))

@hookimpl
def after_decode(images, args):
    return [ImageOps.invert(im.convert("RGB")) for im in images] if args["invert"] else images

@hookimpl
def extra_infotext(args):
    return {"Inverted": f"{args['mode']} x{args['amount']}"} if args["invert"] else {}
"""
LORA = "tiny-lora-ink"


@pytest.fixture(scope="module")
def ext_data_dir(tiny_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from webui.core.models.components import Precision
    from webui.core.models.loader import load_model
    from webui.core.networks.tiny import write_tiny_lora

    data = tmp_path_factory.mktemp("ext-data")
    (data / "models" / "Stable-diffusion").mkdir(parents=True)
    (data / "models" / "VAE").mkdir()
    shutil.copy(tiny_files["sd1"], data / "models" / "Stable-diffusion" / "tiny-sd1.safetensors")
    loras = data / "models" / "Lora"
    write_tiny_lora(loras / f"{LORA}.safetensors", load_model(tiny_files["sd1"], Precision()), seed=3)
    write_tiny_lora(loras / "styles" / "other-style.safetensors", load_model(tiny_files["sd1"], Precision()))
    Image.new("RGB", (300, 200), "orange").save(loras / "styles" / "other-style.preview.png")
    write_extension(data / "extensions", "inverter", INVERTER)
    write_extension(data / "extensions", "broken", BROKEN)
    return data


@pytest.fixture(scope="module")
def studio(ext_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    with running_studio(ext_data_dir, tmp_path_factory.mktemp("ext-studio")) as srv:
        yield srv


def _small(page: Any, seed: int) -> None:
    for elem, value in (("txt2img_steps", 2), ("txt2img_width", 64), ("txt2img_height", 64)):
        set_number(page, elem, value)
    set_number(page, "txt2img_seed", seed)


def _latest(studio: RunningStudio, n: int = 1) -> list[Any]:
    return studio.services.queue.list(limit=n)


def _pick(page: Any, dropdown: str, option: str) -> None:
    page.click(f"#{dropdown} input")
    page.click(f"[role=option]:has-text('{option}')")


def test_an_extension_accordion_value_reaches_its_hook_by_name(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.fill("#txt2img_prompt textarea", "a lighthouse")
    _small(page, 77)
    assert generate(page, "txt2img").startswith("Done")
    plain = _latest(studio)[0]
    page.click("#txt2img_ext_inverter .label-wrap")
    page.check("#txt2img_ext_inverter_invert input[type=checkbox]")
    page.click("#txt2img_ext_inverter_mode label:has-text('half')")
    assert generate(page, "txt2img").startswith("Done")
    wait_value(page, "#txt2img_info", "Inverted: half x1")
    inverted = _latest(studio)[0]
    assert inverted.id != plain.id
    assert inverted.request["extension_args"]["inverter"] == {"invert": True, "amount": 1, "mode": "half"}
    with Image.open(plain.images[0].path) as a, Image.open(inverted.images[0].path) as b:
        assert np.array_equal(255 - np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    assert "Inverted" not in plain.images[0].infotext


def test_the_extensions_tab_lists_errors_and_disabling_persists(studio: RunningStudio, browser: Any) -> None:
    page = open_studio(browser, studio.url)
    page.click("button[role=tab]:has-text('Extensions')")
    page.wait_for_selector("#extensions_table")
    table = page.inner_text("#extensions_table")
    assert "broken" in table and "sfumato_module_that_does_not_exist" in table
    assert "inverter" in table and "xyz_plot" in table
    _pick(page, "extensions_name", "inverter")
    page.click("#extensions_disable")
    page.wait_for_function(
        "document.querySelector('#extensions_message textarea, #extensions_message input').value.length > 0"
    )
    assert "applied on restart" in page.input_value("#extensions_message textarea, #extensions_message input")
    state = json.loads((studio.config.data_dir / "extensions.json").read_text())
    assert state["disabled"] == ["inverter"]
    assert "applied on restart" in page.inner_text("#extensions_table")
    reload(page)
    page.click("button[role=tab]:has-text('Extensions')")
    assert "applied on restart" in page.inner_text("#extensions_table")  # read back from the file
    _pick(page, "extensions_name", "inverter")
    page.click("#extensions_enable")
    wait_value(page, "#extensions_message", "will be enabled")
    assert json.loads((studio.config.data_dir / "extensions.json").read_text())["disabled"] == []


def test_lora_card_click_inserts_the_tag_and_the_image_records_its_hash(
    studio: RunningStudio, browser: Any
) -> None:
    page = open_studio(browser, studio.url)
    page.click("#txt2img_lora .label-wrap")
    page.wait_for_function("document.querySelectorAll('#txt2img_lora_cards .sf-lora-card').length === 2")
    assert page.locator("#txt2img_lora_cards img[src^='data:image/jpeg']").count() == 1  # the preview
    page.fill("#txt2img_lora_search input, #txt2img_lora_search textarea", "ink")
    page.wait_for_function("document.querySelectorAll('#txt2img_lora_cards .sf-lora-card').length === 1")
    page.fill("#txt2img_prompt textarea", "a tree")
    page.click(f"#txt2img_lora_cards .sf-lora-card[data-name='{LORA}']")
    assert page.input_value("#txt2img_prompt textarea") == f"a tree <lora:{LORA}:1>"
    _small(page, 5)
    assert generate(page, "txt2img").startswith("Done")
    wait_value(page, "#txt2img_info", "Lora hashes")
    job = _latest(studio)[0]
    assert job.request["prompt"] == f"a tree <lora:{LORA}:1>"  # what the browser showed is what ran
    assert f'Lora hashes: "{LORA}: ' in page.input_value("#txt2img_info textarea")
    # a second click takes it out again (as A1111), whatever weight the user gave it meanwhile
    page.fill("#txt2img_prompt textarea", f"a tree <lora:{LORA}:0.6>, at dusk")
    page.click(f"#txt2img_lora_cards .sf-lora-card[data-name='{LORA}']")
    assert page.input_value("#txt2img_prompt textarea") == "a tree, at dusk"
    page.click("button[role=tab]:has-text('Models')")
    page.wait_for_function("document.querySelectorAll('#models_lora_cards .sf-lora-card').length === 2")


def test_xyz_plot_over_two_seeds_shows_the_grid_and_runs_each_cell_as_a_job(
    studio: RunningStudio, browser: Any
) -> None:
    page = open_studio(browser, studio.url)
    before = {j.id for j in _latest(studio, 100)}
    grids_before = set(studio.config.outputs_dir.glob("txt2img-grids/**/*.png"))
    page.fill("#txt2img_prompt textarea", "a plot")
    _small(page, 1)
    _pick(page, "txt2img_script", "X/Y/Z plot")
    page.wait_for_selector("#txt2img_script_x_y_z_plot_x_values", state="visible")
    page.fill(
        "#txt2img_script_x_y_z_plot_x_values input, #txt2img_script_x_y_z_plot_x_values textarea", "11, 12"
    )
    page.check("#txt2img_script_x_y_z_plot_include_lone_images input")  # show the cells after the grid
    status = generate(page, "txt2img", timeout=180)
    assert status.startswith("Done") and "grid and 2 images" in status, status
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length >= 3")
    # each cell's caption names its axis value (not only the seed)
    page.wait_for_function(
        "() => ['Seed: 11', 'Seed: 12'].every("
        "t => document.querySelector('#txt2img_gallery').innerText.includes(t))",
        timeout=10_000,
    )
    cells = [j for j in _latest(studio, 100) if j.id not in before]
    assert sorted(j.images[0].seed for j in cells) == [11, 12]
    assert all(j.owner.startswith("browser-") and j.state.value == "done" for j in cells)
    grids = sorted(set(studio.config.outputs_dir.glob("txt2img-grids/**/*.png")) - grids_before)
    assert len(grids) == 1  # the plot's grid (other tests share this server's outputs)
    with Image.open(grids[0]) as grid:
        assert grid.width > 2 * 64 - 1 and grid.height >= 64
