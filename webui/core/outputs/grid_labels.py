"""Drawing a labelled grid (X/Y/Z plot, prompt matrix): column labels above, row labels on the left,
PIL's default font.

The layout: cells of one size (the first image's) in rows x columns, `margin` pixels of white between
cells (A1111's "grid margins"), a header band for the column labels and a margin for the row labels,
each label wrapped to fit its space and centred. A label line that starts with "~" is drawn grey and
struck through (a prompt matrix part that is off). Several such grids (the Z axis) are put side by
side under their own titles.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

PAD = 4
OFF = "~"  # a label line starting with this is drawn grey and struck through


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
    lines = _lines(draw, text, font, right - left - 2 * PAD)
    lh = _line_height(font)
    y = top + max(0, (bottom - top - lh * len(lines)) // 2)
    for line in lines:
        off = line.startswith(OFF)
        line = line.removeprefix(OFF)
        width = int(draw.textlength(line, font=font))
        x = left + max(PAD, (right - left - width) // 2)
        draw.text((x, y), line, fill="#999999" if off else "black", font=font)
        if off:
            draw.line((x, y + lh // 2, x + width, y + lh // 2), fill="#999999", width=1)
        y += lh


def _lines(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int
) -> list[str]:
    """The label's lines: its own lines (each wrapped, an OFF mark kept on every piece)."""
    out: list[str] = []
    for part in text.split("\n"):
        off = part.startswith(OFF)
        out += [f"{OFF}{w}" if off else w for w in _wrap(draw, part.removeprefix(OFF), font, width)]
    return out or [""]


def labelled_grid(
    cells: Sequence[Sequence[Image.Image]],
    col_labels: Sequence[str],
    row_labels: Sequence[str],
    margin: int = 0,
) -> Image.Image:
    """cells[row][col] with labels and `margin` pixels between cells; empty label lists leave out their
    band."""
    w, h = cells[0][0].size
    rows, cols = len(cells), len(cells[0])
    sx, sy = w + margin, h + margin  # the stride from one cell to the next
    font = font_for(h)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lh = _line_height(font)
    left = 0
    if any(row_labels):
        widest = max(int(probe.textlength(line.removeprefix(OFF), font=font)) for t in row_labels
                     for line in t.split("\n"))  # fmt: skip
        left = min(max(widest + 2 * PAD, w // 2), 2 * w)
    top = 0
    if any(col_labels):
        lines = max(len(_lines(probe, t, font, w - 2 * PAD)) for t in col_labels)
        top = lines * lh + 2 * PAD
    grid = Image.new("RGB", (left + cols * sx - margin, top + rows * sy - margin), "white")
    draw = ImageDraw.Draw(grid)
    for c, text in enumerate(col_labels):
        _text_block(draw, text, font, (left + c * sx, 0, left + c * sx + w, top))
    for r, text in enumerate(row_labels):
        _text_block(draw, text, font, (0, top + r * sy, left, top + r * sy + h))
    for r, row in enumerate(cells):
        for c, im in enumerate(row):
            grid.paste(
                im.convert("RGB").resize((w, h)) if im.size != (w, h) else im.convert("RGB"),
                (left + c * sx, top + r * sy),
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
