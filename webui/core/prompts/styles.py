"""Prompt styles: A1111's `styles.csv`, read, applied to prompts and edited without ever losing the file.

The file has the columns name, prompt, negative_prompt (UTF-8, usually with a BOM; fields quoted the CSV
way, so commas and newlines inside a prompt are fine). Old files use `text` for `prompt`; extra columns
(`description`, ...) are ignored when reading and kept when saving, and so are rows the studio does not
use (blank names, `#` comment/divider rows).

Applying a style to a prompt, A1111's way: a style text holding `{prompt}` has it replaced by the prompt;
otherwise the two are joined as "prompt, style" (each stripped, empty ones left out). Several styles are
applied one after the other, in the order given.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from webui.core.atomic import write_atomic
from webui.core.types import RequestError

FIELDS = ("name", "prompt", "negative_prompt")
PLACEHOLDER = "{prompt}"

Rows = list[dict[str, str]]  # the file's rows, every column


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


class StylesFileError(Exception):
    """styles.csv cannot be changed safely (it could not be read, or the write failed)."""


def apply_style_text(style_text: str, prompt: str) -> str:
    """One style text applied to a prompt: `{prompt}` is replaced, else "prompt, style" (A1111)."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


@dataclass(frozen=True)
class _Table:
    """The file as rows of all its columns (kept for saving), and the styles read from them."""

    fieldnames: tuple[str, ...] = FIELDS
    rows: tuple[dict[str, str], ...] = ()
    styles: tuple[Style, ...] = ()
    problem: str | None = None


def _is_style_row(name: str) -> bool:
    return bool(name.strip()) and not name.startswith("#")


def _parse(text: str) -> _Table:
    """Parse the file's text; a file that cannot be used gives a table with `problem` set."""
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
        header = reader.fieldnames
        if header is None:  # empty file
            return _Table()
        fieldnames = tuple(h.strip() for h in header)
        reader.fieldnames = list(fieldnames)
        if "name" not in fieldnames:
            return _Table(problem=f"no 'name' column (the header is {', '.join(fieldnames) or 'empty'})")
        if "prompt" not in fieldnames and "text" not in fieldnames:
            return _Table(problem="no 'prompt' column")
        rows = []
        for raw in reader:
            row = {k: v or "" for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
            if "prompt" not in fieldnames:  # the old "name,text" layout
                row["prompt"] = row.pop("text", "")
            rows.append(row)
    except csv.Error as e:
        return _Table(problem=f"not a valid CSV file: {e}")
    fieldnames = tuple(dict.fromkeys(("prompt" if f == "text" else f) for f in fieldnames))
    fieldnames = FIELDS + tuple(f for f in fieldnames if f not in FIELDS)
    by_name: dict[str, Style] = {}  # a later row with the same name wins, as in A1111
    for row in rows:
        name = row.get("name", "")
        if _is_style_row(name):
            by_name[name] = Style(name, row.get("prompt", ""), row.get("negative_prompt", ""))
    return _Table(fieldnames, tuple(rows), tuple(by_name.values()))


def _render(fieldnames: Sequence[str], rows: Sequence[dict[str, str]]) -> str:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(fieldnames), restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8 with BOM, as A1111 writes styles.csv) atomically."""
    write_atomic(path, text.encode("utf-8-sig"))


def _check_style(style: Style) -> None:
    if not isinstance(style, Style):
        raise RequestError("styles", f"expected a Style, got {type(style).__name__}")
    for name in ("name", "prompt", "negative_prompt"):
        if not isinstance(getattr(style, name), str):
            raise RequestError(name, f"must be text, got {type(getattr(style, name)).__name__}")
    if not style.name.strip():
        raise RequestError("name", "a style needs a name")
    if style.name.startswith("#"):
        raise RequestError("name", "must not start with '#' (styles.csv treats such rows as comments)")
    if "\n" in style.name or "\r" in style.name:
        raise RequestError("name", "must be a single line")


class StyleStore:
    """The styles of one styles.csv. All state is in the instance; its methods are thread-safe.

    Use one store per file in a process: the lock is the instance's, so two stores on the same file
    could interleave their read-modify-write cycles.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._table = _Table()
        self._signature: tuple[int, int, int] | None = None

    def _read(self) -> tuple[_Table, tuple[int, int, int] | None]:
        """Read the file now: its table and its (mtime, size, inode) signature; missing file: empty."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            return _Table(), None
        except OSError as e:
            return _Table(problem=f"cannot read it: {e.strerror or e}"), None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return _Table(problem=f"not UTF-8 text (byte {e.start}): {e.reason}"), signature
        return _parse(text), signature

    def _current(self) -> _Table:
        """The table, re-read only when the file changed since last time (call with the lock held)."""
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if signature is None or signature != self._signature:
            self._table, self._signature = self._read()
        return self._table

    @property
    def problem(self) -> str | None:
        """Why the file could not be read (then list() is empty), or None."""
        with self._lock:
            problem = self._current().problem
        return f"{self.path}: {problem}" if problem else None

    def list(self) -> list[Style]:
        """Every style, in file order (a name that appears twice takes its last row's texts)."""
        with self._lock:
            return list(self._current().styles)

    def get(self, name: str) -> Style:
        for style in self.list():
            if style.name == name:
                return style
        raise RequestError("styles", self._unknown(name))

    def _unknown(self, name: str) -> str:
        names = [s.name for s in self.list()]
        if not names:
            known = f"no styles could be read ({self.problem})" if self.problem else "no styles are defined"
        else:
            shown = ", ".join(names[:30]) + (f", ... ({len(names)} in all)" if len(names) > 30 else "")
            known = f"available: {shown}"
        return f"unknown style {name!r}; {known}"

    def apply(self, prompt: str, negative: str, names: Sequence[str]) -> tuple[str, str]:
        """The prompt and negative prompt with the named styles applied, in order."""
        if isinstance(names, str):
            raise RequestError("styles", "must be a list of style names, not one string")
        styles = {s.name: s for s in self.list()}
        for name in names:
            style = styles.get(name)
            if style is None:
                raise RequestError("styles", self._unknown(name))
            prompt = apply_style_text(style.prompt, prompt)
            negative = apply_style_text(style.negative_prompt, negative)
        return prompt, negative

    def _rewrite(self, change: str, edit: Callable[[Rows], Rows]) -> None:
        """Re-read the file, apply `edit` to its rows and write it back atomically."""
        with self._lock:
            table, _ = self._read()  # fresh: never write back a stale copy
            if table.problem:
                raise StylesFileError(
                    f"cannot {change}: {self.path} could not be read ({table.problem}); it was left "
                    "untouched. Fix or move the file and try again."
                )
            rows = edit([dict(r) for r in table.rows])
            try:
                _write_atomic(self.path, _render(table.fieldnames, rows))
            except OSError as e:
                raise StylesFileError(f"cannot {change}: writing {self.path} failed: {e}") from e
            self._table, self._signature = self._read()

    def save(self, style: Style) -> None:
        """Add the style, or replace the one of that name where it stands; other rows are kept as they are."""
        _check_style(style)
        texts = {"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}

        def edit(rows: Rows) -> Rows:
            out: Rows = []
            done = False
            for row in rows:
                if row.get("name") != style.name:
                    out.append(row)
                elif not done:  # the first row of that name is updated; later duplicates go
                    out.append({**row, **texts})
                    done = True
            return out if done else [*out, texts]

        self._rewrite(f"save style {style.name!r}", edit)

    def delete(self, name: str) -> None:
        """Remove the named style (every row of that name)."""
        if name not in {s.name for s in self.list()}:
            raise RequestError("styles", self._unknown(name))
        self._rewrite(f"delete style {name!r}", lambda rows: [r for r in rows if r.get("name") != name])
