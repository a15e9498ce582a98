"""Drawing a labelled grid: column labels above, row labels on the left, PIL's default font.

The layout: cells of one size (the first image's) in rows x columns, a header band for the column
labels and a margin for the row labels, each label wrapped to fit its space and centred. Several
such grids (the Z axis) are put side by side under their own titles.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

PAD = 4


def font_for(cell_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(10, min(48, cell_height // 8))
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int
) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    box = font.getbbox("Ag")
    return int(box[3] - box[1]) + 2


def _text_block(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    box: tuple[int, int, int, int],
) -> None:
    left, top, right, bottom = box
    lines = _wrap(draw, text, font, right - left - 2 * PAD)
    lh = _line_height(font)
    y = top + max(0, (bottom - top - lh * len(lines)) // 2)
    for line in lines:
        x = left + max(PAD, (right - left - int(draw.textlength(line, font=font))) // 2)
        draw.text((x, y), line, fill="black", font=font)
        y += lh


def labelled_grid(
    cells: Sequence[Sequence[Image.Image]], col_labels: Sequence[str], row_labels: Sequence[str]
) -> Image.Image:
    """cells[row][col] with labels; empty label lists leave out their band."""
    w, h = cells[0][0].size
    rows, cols = len(cells), len(cells[0])
    font = font_for(h)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lh = _line_height(font)
    left = 0
    if any(row_labels):
        widest = max(int(probe.textlength(t, font=font)) for t in row_labels)
        left = min(max(widest + 2 * PAD, w // 2), 2 * w)
    top = 0
    if any(col_labels):
        lines = max(len(_wrap(probe, t, font, w - 2 * PAD)) for t in col_labels)
        top = lines * lh + 2 * PAD
    grid = Image.new("RGB", (left + cols * w, top + rows * h), "white")
    draw = ImageDraw.Draw(grid)
    for c, text in enumerate(col_labels):
        _text_block(draw, text, font, (left + c * w, 0, left + (c + 1) * w, top))
    for r, text in enumerate(row_labels):
        _text_block(draw, text, font, (0, top + r * h, left, top + (r + 1) * h))
    for r, row in enumerate(cells):
        for c, im in enumerate(row):
            grid.paste(
                im.convert("RGB").resize((w, h)) if im.size != (w, h) else im.convert("RGB"),
                (left + c * w, top + r * h),
            )
    return grid


def side_by_side(grids: Sequence[Image.Image], titles: Sequence[str]) -> Image.Image:
    """Grids in one row, each under its title (the Z axis); one untitled grid comes back as is."""
    if len(grids) == 1 and not any(titles):
        return grids[0]
    font = font_for(max(g.height for g in grids) // 4)
    lh = _line_height(font)
    top = (lh + 2 * PAD) if any(titles) else 0
    gap = 2 * PAD
    width = sum(g.width for g in grids) + gap * (len(grids) - 1)
    out = Image.new("RGB", (width, top + max(g.height for g in grids)), "white")
    draw = ImageDraw.Draw(out)
    x = 0
    for g, title in zip(grids, titles, strict=True):
        _text_block(draw, title, font, (x, 0, x + g.width, top))
        out.paste(g, (x, top))
        x += g.width + gap
    return out
