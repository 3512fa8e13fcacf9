"""Every relative link and image in README.md and docs/*.md points to a file in the checkout, and
a link with a #fragment into a Markdown file to one of its headings (as GitHub spells a heading's
anchor); a link to a server path (`/explore?...`) names a page in the README's table of pages;
a reference link ([text][name]) has its definition; and the README links every guide in docs/.
Links with a scheme (http:, https:, mailto:) are not followed."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *GUIDES]

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.S)
# [text](target) and ![alt](target), the text holding at most one level of brackets (h[221]).
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s<>()]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DEFINITION = re.compile(r"^ {0,3}\[([^\]]+)\]:[ \t]*<?(\S+?)>?(?:[ \t]+.*)?$", re.M)   # one line each
REFERENCE = re.compile(r"\]\[([^\]]+)\]")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors for the headings: lower case, punctuation dropped, spaces as hyphens,
    a repeated one numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", markdown.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def readme_pages() -> set[str]:
    """The paths in the first column of the README's table of pages."""
    section = README.read_text(encoding="utf-8").split("## The pages", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| \[?`(/[^`]*)`", section, re.M))


def targets(document: Path) -> list[str]:
    text = prose(document.read_text(encoding="utf-8"))
    return INLINE.findall(text) + [target for _, target in DEFINITION.findall(text)]


def broken_links(document: Path, pages: set[str], root: Path = ROOT) -> list[str]:
    """What is wrong with each link of the document, one line each; files must lie under root."""
    text = prose(document.read_text(encoding="utf-8"))
    defined = {name.lower() for name, _ in DEFINITION.findall(text)}
    problems = [f"[{name}] is used but never defined" for name in REFERENCE.findall(text)
                if name.lower() not in defined]
    for target in targets(document):
        if SCHEME.match(target):
            continue
        path, _, fragment = target.partition("#")
        if path.startswith("/"):
            page = path.split("?", 1)[0]
            if page not in pages:
                problems.append(f"{target[:80]}: {page} is not a page in the README's table of pages")
            continue
        file = (document.parent / unquote(path)).resolve() if path else document
        if not file.is_relative_to(root) or not file.exists():
            problems.append(f"{target}: no such file in the checkout")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            problems.append(f"{target}: {file.relative_to(root)} has no heading with the anchor #{fragment}")
    return problems


def test_the_readme_has_a_table_of_pages():
    assert {"/", "/explore", "/train", "/learn"} <= readme_pages()


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d.relative_to(ROOT).as_posix() for d in DOCUMENTS])
def test_every_link_and_image_points_to_something_that_exists(document):
    text = prose(document.read_text(encoding="utf-8"))
    assert targets(document), f"{document.name} has no links: is the link pattern still right?"
    assert text.count("](") == len(INLINE.findall(text)), f"{document.name} has links the pattern does not read"
    problems = broken_links(document, readme_pages())
    assert not problems, f"{document.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_readme_links_every_guide_and_shows_a_picture():
    linked = {(README.parent / t.split("#")[0]).resolve() for t in targets(README) if not SCHEME.match(t)}
    assert GUIDES, "docs/ holds no guides"
    assert not [g.name for g in GUIDES if g.resolve() not in linked], "guides the README does not link"
    assert any(t.endswith(".png") for t in targets(README))


def test_a_broken_link_is_reported(tmp_path):
    """The check finds each kind of break (a missing file, picture, anchor, page, reference, a file
    outside the checkout, a definition right under another) and passes what exists; brackets in
    code are not links."""
    root = tmp_path / "checkout"
    (root / "img").mkdir(parents=True)
    (root / "img" / "there.png").write_bytes(b"")
    (root / "other.md").write_text("# Other\n\n## Karpathy's cells, in Python\n", encoding="utf-8")
    (tmp_path / "outside.md").write_text("# Outside\n", encoding="utf-8")
    document = root / "doc.md"
    document.write_text(
        "# Doc\n\nA [guide](missing.md), ![a picture](img/none.png), [an anchor](other.md#nowhere), "
        "[a page](/nowhere?x=1), [a reference][undefined], [outside](../outside.md); "
        "[fine](other.md#karpathys-cells-in-python), ![fine](img/there.png), [fine](#doc), [fine](/?a=1), "
        "[fine][defined], [fine](https://example.org/missing.md);\n"
        "`[code](not-a-link.md)` and\n```bash\n[x](also-code.md)\n```\n\n[defined]: other.md\n"
        "[next]: gone.md\n",
        encoding="utf-8")
    problems = broken_links(document, {"/"}, root=root)
    shown = "\n".join(problems)
    for expected in ["missing.md", "img/none.png", "other.md#nowhere", "/nowhere", "[undefined]", "../outside.md",
                     "gone.md"]:
        assert expected in shown, shown
    assert len(problems) == 7, shown
