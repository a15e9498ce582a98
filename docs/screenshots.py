"""Screenshots of each studio tab for the README: `python docs/screenshots.py` (writes docs/*.png).

Starts the real server on the tiny demo models in a temporary folder, generates one image per
generation tab, and saves a PNG per tab with Debian's Chromium (Playwright).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()


def _loras_and_extensions(data: Path, model: object) -> None:
    """Three tiny LoRAs (two with previews) and a user extension that fails to import."""
    from PIL import Image

    from webui.core.networks.tiny import write_tiny_lora

    loras = data / "models" / "Lora"
    for i, name in enumerate(("ink-sketch", "watercolor", "film-grain")):
        write_tiny_lora(loras / f"{name}.safetensors", model, seed=i)
        if name != "film-grain":  # one without a preview
            Image.radial_gradient("L").resize((128, 128)).convert("RGB").point(
                lambda v, i=i: (v + 80 * i) % 256
            ).save(loras / f"{name}.preview.png")
    broken = data / "extensions" / "half-finished"
    broken.mkdir(parents=True)
    (broken / "extension.toml").write_text(
        'name = "half-finished"\nversion = "0.1"\ndescription = "an example of a broken extension"\n'
        'api_version = "1.0"\nentry = "main"\n'
    )
    (broken / "main.py").write_text("import a_module_that_is_not_installed\n")


def _new_parts(page: object, out: Path) -> None:
    """The Extensions tab, the LoRA browser and an X/Y/Z plot over seeds."""
    from tests.browser.harness import generate, set_number

    p: Any = page
    p.click("button[role=tab]:has-text('Extensions')")
    p.wait_for_timeout(800)
    p.screenshot(path=str(out / "extensions.png"), full_page=True)
    p.click("button[role=tab]:has-text('txt2img')")
    p.click("#txt2img_lora .label-wrap")
    p.wait_for_selector("#txt2img_lora_cards .sf-lora-card")
    p.fill("#txt2img_prompt textarea", "a lighthouse at dusk")
    p.click("#txt2img_lora_cards .sf-lora-card[data-name='ink-sketch']")
    p.wait_for_timeout(500)
    p.screenshot(path=str(out / "lora.png"), full_page=True)
    p.click("#txt2img_lora .label-wrap")
    p.click("#txt2img_script input")
    p.click("[role=option]:has-text('X/Y/Z plot')")
    xs = "#txt2img_script_x_y_z_plot_x_values"
    p.wait_for_selector(xs, state="visible")
    p.fill(f"{xs} textarea, {xs} input", "1, 2, 3")
    set_number(p, "txt2img_batch_size", 1)
    generate(p, "txt2img", timeout=300)
    p.wait_for_timeout(800)
    p.screenshot(path=str(out / "xyz.png"), full_page=True)


def _extras(page: object, out: Path) -> None:
    """The first txt2img image sent to Extras and upscaled 2x."""
    from tests.browser.harness import generate

    p: Any = page
    p.click("button[role=tab]:has-text('txt2img')")
    p.click("#txt2img_to_extras")
    p.wait_for_selector("#extras_image img")
    generate(p, "extras")
    p.wait_for_timeout(800)
    p.screenshot(path=str(out / "extras.png"), full_page=True)


def main() -> int:
    from PIL import Image

    from tests.browser.harness import chromium, generate, open_studio, running_studio, set_number
    from webui.core.models.tiny import build_tiny, save_single_file

    out = ROOT / "docs"
    with tempfile.TemporaryDirectory(prefix="sfumato-shots-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "data"
        ckpts = data / "models" / "Stable-diffusion"
        ckpts.mkdir(parents=True)
        (data / "models" / "VAE").mkdir()
        for arch in ("sd1", "sd1-inpaint"):
            save_single_file(build_tiny(arch, seed=0), ckpts / f"tiny-{arch.replace('-', '_')}.safetensors")
        _loras_and_extensions(data, build_tiny("sd1", seed=0))
        init = tmp / "init.png"
        Image.radial_gradient("L").resize((64, 64)).convert("RGB").save(init)
        with running_studio(data, tmp / "run") as srv, chromium() as browser:
            page = open_studio(browser, srv.url, viewport={"width": 1400, "height": 1000})
            page.fill("#txt2img_prompt textarea", "a lighthouse at dusk, (oil painting:1.2)")
            page.fill("#txt2img_neg_prompt textarea", "blurry")
            for elem, value in (("txt2img_steps", 8), ("txt2img_width", 128), ("txt2img_height", 128)):
                set_number(page, elem, value)
            set_number(page, "txt2img_batch_size", 2)
            generate(page, "txt2img")
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "txt2img.png"), full_page=True)
            page.click("#txt2img_to_img2img")
            page.wait_for_timeout(800)
            page.fill("#img2img_prompt textarea", "the same lighthouse, stormy sky")
            for elem, value in (("img2img_steps", 6), ("img2img_width", 128), ("img2img_height", 128)):
                set_number(page, elem, value)
            generate(page, "img2img")
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "img2img.png"), full_page=True)
            page.click("button[role=tab]:has-text('Inpaint')")
            page.set_input_files("#inpaint_editor input[type=file]", str(init))
            page.wait_for_timeout(1000)
            box = page.locator("#inpaint_editor canvas").first.bounding_box()
            if box:
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(cx - 15, cy)
                page.mouse.down()
                page.mouse.move(cx + 15, cy, steps=10)
                page.mouse.up()
            page.fill("#inpaint_prompt textarea", "a window")
            page.wait_for_timeout(500)
            page.screenshot(path=str(out / "inpaint.png"), full_page=True)
            _extras(page, out)
            image = next(j for j in srv.services.queue.list(limit=10) if j.kind == "txt2img").images[0].path
            for tab, name in (
                ("PNG Info", "pnginfo"),
                ("Models", "models"),
                ("Settings", "settings"),
                ("History", "history"),
                ("Gallery", "gallery"),
            ):
                page.click(f"button[role=tab]:has-text('{tab}')")
                page.wait_for_timeout(600)
                if name == "pnginfo":
                    page.set_input_files("#pnginfo_image input[type=file]", image)
                    page.wait_for_timeout(1200)
                if name == "gallery":
                    page.wait_for_selector("#gallery_images img")
                    page.locator("#gallery_images img").first.click()
                    page.wait_for_timeout(800)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            _new_parts(page, out)
            phone = open_studio(browser, srv.url, viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.screenshot(path=str(out / "phone.png"))
    print("screenshots written to", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
