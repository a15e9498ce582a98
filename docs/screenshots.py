"""Screenshots of each studio tab for the README: `python docs/screenshots.py` (writes docs/*.png).

Starts the real server on the tiny demo models in a temporary folder, generates one image per
generation tab, and saves a PNG per tab with Debian's Chromium (Playwright).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webui import offline  # noqa: E402

offline.apply()


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
            save_single_file(build_tiny(arch, seed=0), ckpts / f"tiny-{arch}.safetensors")
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
            image = next(j for j in srv.services.queue.list(limit=10) if j.kind == "txt2img").images[0].path
            for tab, name in (
                ("PNG Info", "pnginfo"),
                ("Models", "models"),
                ("Settings", "settings"),
                ("History", "history"),
            ):
                page.click(f"button[role=tab]:has-text('{tab}')")
                page.wait_for_timeout(600)
                if name == "pnginfo":
                    page.set_input_files("#pnginfo_image input[type=file]", image)
                    page.wait_for_timeout(1200)
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            phone = open_studio(browser, srv.url, viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.screenshot(path=str(out / "phone.png"))
    print("screenshots written to", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
