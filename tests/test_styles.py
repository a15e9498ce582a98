"""styles.csv: A1111's files read as A1111 reads them, styles applied as A1111 applies them, and saves that
never lose the file or another thread's rows."""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webui.core.prompts.styles import Style, StylesFileError, StyleStore, apply_style_text
from webui.core.types import RequestError

# As A1111 writes it: BOM, CRLF, quotes around fields with commas, doubled quotes, a newline in a field.
A1111_CSV = (
    "\ufeffname,prompt,negative_prompt\r\n"
    'Cinematic,"cinematic still {prompt} . emotional, harmonious","anime, cartoon, ""graphic"""\r\n'
    "Sharp,highly detailed,blurry\r\n"
    '"Two, lines","line one\r\nline two",\r\n'
    "# Divider,,\r\n"
    ",orphan prompt,orphan negative\r\n"
    "Empty,,\r\n"
)


def _store(tmp_path: Path, text: str | bytes = A1111_CSV) -> StyleStore:
    path = tmp_path / "styles.csv"
    if isinstance(text, str):
        path.write_bytes(text.encode("utf-8"))
    else:
        path.write_bytes(text)
    return StyleStore(path)


def test_reads_a1111_rows(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.problem is None
    assert store.list() == [
        Style("Cinematic", "cinematic still {prompt} . emotional, harmonious", 'anime, cartoon, "graphic"'),
        Style("Sharp", "highly detailed", "blurry"),
        Style("Two, lines", "line one\r\nline two", ""),
        Style("Empty", "", ""),
    ]


def test_extra_columns_old_layout_and_duplicates(tmp_path: Path) -> None:
    store = _store(
        tmp_path, "name, description, prompt, negative_prompt\nA, about a, pa, na\nB,,pb\nA,,pa2,na2\n"
    )
    assert store.list() == [Style("A", "pa2", "na2"), Style("B", "pb", "")]  # the last row of a name wins
    old = _store(tmp_path, "name,text\nOld,old style text\n")
    assert old.list() == [Style("Old", "old style text", "")]


@pytest.mark.parametrize(
    ("style", "prompt", "expected"),
    [
        ("masterpiece", "a cat", "a cat, masterpiece"),
        ("  masterpiece ", "  a cat ", "a cat, masterpiece"),
        ("masterpiece", "", "masterpiece"),
        ("", "a cat", "a cat"),
        ("", "", ""),
        ("a cat,", "x,", "x,, a cat,"),  # A1111 does not tidy commas
        ("photo of {prompt}, 35mm", "a cat", "photo of a cat, 35mm"),
        ("photo of {prompt}", "", "photo of "),
        ("{prompt} and {prompt}", " x ", " x  and  x "),  # placeholder: no stripping
    ],
)
def test_apply_style_text(style: str, prompt: str, expected: str) -> None:
    assert apply_style_text(style, prompt) == expected


def test_apply_several_styles_in_order(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.apply("a cat", "ugly", ["Cinematic", "Sharp"]) == (
        "cinematic still a cat . emotional, harmonious, highly detailed",
        'ugly, anime, cartoon, "graphic", blurry',
    )
    assert store.apply("a cat", "ugly", ["Sharp", "Cinematic"]) == (
        "cinematic still a cat, highly detailed . emotional, harmonious",
        'ugly, blurry, anime, cartoon, "graphic"',
    )
    assert store.apply("a cat", "", []) == ("a cat", "")
    assert store.apply("a cat", "", ["Empty"]) == ("a cat", "")


def test_unknown_style_names_the_field(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(RequestError) as err:
        store.apply("a cat", "", ["Sharp", "Nope"])
    assert err.value.field == "styles" and "'Nope'" in err.value.message and "Cinematic" in err.value.message
    with pytest.raises(RequestError, match="styles: unknown style 'x'; no styles are defined"):
        StyleStore(tmp_path / "missing.csv").get("x")
    with pytest.raises(RequestError) as err2:
        store.apply("a", "", "Sharp")  # a single string is not a list of names
    assert err2.value.field == "styles"
    assert store.get("Sharp") == Style("Sharp", "highly detailed", "blurry")


def test_rereads_when_the_file_changes(tmp_path: Path) -> None:
    store = _store(tmp_path, "name,prompt,negative_prompt\nA,pa,\n")
    assert [s.name for s in store.list()] == ["A"]
    (tmp_path / "styles.csv").write_text("name,prompt,negative_prompt\nA,pa,\nB,pb,\n", encoding="utf-8")
    assert [s.name for s in store.list()] == ["A", "B"]
    (tmp_path / "styles.csv").unlink()
    assert store.list() == [] and store.problem is None


def test_save_adds_replaces_and_keeps_everything_else(tmp_path: Path) -> None:
    text = (
        "name,prompt,negative_prompt,description\n# Divider,,,\nA,pa,na,about A\nB,pb,nb,about B\nA,dup,,x\n"
    )
    store = _store(tmp_path, text)
    store.save(Style("A", 'new, "quoted"\nprompt', "new neg"))
    store.save(Style("C", "pc {prompt}", ""))
    assert store.list() == [
        Style("A", 'new, "quoted"\nprompt', "new neg"),
        Style("B", "pb", "nb"),
        Style("C", "pc {prompt}", ""),
    ]
    raw = (tmp_path / "styles.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # utf-8-sig, as A1111 writes it
    with open(tmp_path / "styles.csv", encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["# Divider", "A", "B", "C"]  # order kept, the duplicate A gone
    assert rows[1]["description"] == "about A" and rows[2]["description"] == "about B"
    assert StyleStore(tmp_path / "styles.csv").list() == store.list()  # what was saved reads back


def test_save_creates_the_file_and_delete_removes(tmp_path: Path) -> None:
    store = StyleStore(tmp_path / "sub" / "styles.csv")
    store.save(Style("One", "p1", "n1"))
    store.save(Style("Two", "p2"))
    store.delete("One")
    assert store.list() == [Style("Two", "p2", "")]
    with pytest.raises(RequestError, match="unknown style 'One'"):
        store.delete("One")


@pytest.mark.parametrize(
    ("style", "field"),
    [(Style(""), "name"), (Style("  "), "name"), (Style("#x"), "name"), (Style("a\nb"), "name")],
)
def test_save_rejects_bad_styles(tmp_path: Path, style: Style, field: str) -> None:
    store = _store(tmp_path)
    before = (tmp_path / "styles.csv").read_bytes()
    with pytest.raises(RequestError) as err:
        store.save(style)
    assert err.value.field == field
    assert (tmp_path / "styles.csv").read_bytes() == before


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xff\xfe\x00garbage \x80\x81", "not UTF-8"),
        (b"prompt,negative_prompt\na,b\n", "no 'name' column"),
        (b"name,other\na,b\n", "no 'prompt' column"),
        (b'name,prompt\nbig,"' + b"x" * 200_000 + b'"\n', "not a valid CSV"),
    ],
)
def test_unreadable_file_is_reported_and_never_overwritten(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    store = _store(tmp_path, content)
    assert store.list() == []
    assert store.problem is not None and reason in store.problem and "styles.csv" in store.problem
    with pytest.raises(StylesFileError, match="left untouched"):
        store.save(Style("New", "p"))
    assert (tmp_path / "styles.csv").read_bytes() == content
    assert list(tmp_path.iterdir()) == [tmp_path / "styles.csv"]


def test_failed_write_leaves_the_old_file_and_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    before = (tmp_path / "styles.csv").read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StylesFileError, match="No space left"):
        store.save(Style("New", "p"))
    monkeypatch.undo()
    assert (tmp_path / "styles.csv").read_bytes() == before
    assert list(tmp_path.iterdir()) == [tmp_path / "styles.csv"]
    assert "New" not in {s.name for s in store.list()}


def test_crash_while_writing_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    before = (tmp_path / "styles.csv").read_bytes()

    def crash(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(StylesFileError, match="Input/output error"):
        store.delete("Sharp")
    monkeypatch.undo()
    assert (tmp_path / "styles.csv").read_bytes() == before
    assert list(tmp_path.iterdir()) == [tmp_path / "styles.csv"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    store = _store(folder)
    before = (folder / "styles.csv").read_bytes()
    folder.chmod(0o555)
    try:
        with pytest.raises(StylesFileError, match="writing"):
            store.save(Style("New", "p"))
    finally:
        folder.chmod(0o755)
    assert (folder / "styles.csv").read_bytes() == before
    assert list(folder.iterdir()) == [folder / "styles.csv"]


def test_concurrent_saves_keep_every_row(tmp_path: Path) -> None:
    store = _store(tmp_path)
    n_threads, per_thread = 8, 5
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                store.save(Style(f"t{t}-{i}", f"prompt {t} {i}", "neg"))
                store.list()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = {s.name for s in StyleStore(tmp_path / "styles.csv").list()}
    assert {f"t{t}-{i}" for t in range(n_threads) for i in range(per_thread)} <= names
    assert {"Cinematic", "Sharp", "Two, lines", "Empty"} <= names
    assert [p.name for p in tmp_path.iterdir()] == ["styles.csv"]


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(name=_text, prompt=_text, negative=_text)
def test_save_round_trips_any_text(name: str, prompt: str, negative: str) -> None:
    """Whatever the texts (quotes, commas, newlines, unicode), a saved style reads back the same."""
    import tempfile

    if not name.strip() or name.startswith("#") or "\n" in name or "\r" in name:
        return
    if name != name.lstrip() or prompt != prompt.lstrip() or negative != negative.lstrip():
        return  # A1111 reads with skipinitialspace: leading blanks of unquoted fields do not survive
    with tempfile.TemporaryDirectory() as d:
        store = StyleStore(Path(d) / "styles.csv")
        store.save(Style(name, prompt, negative))
        assert StyleStore(Path(d) / "styles.csv").list() == [Style(name, prompt, negative)]
