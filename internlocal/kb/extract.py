"""Text out of a user's files, with where each piece came from (line or page, heading).

One function per kind; ``extract`` picks by extension. Libraries do the parsing (pypdf, python-docx,
BeautifulSoup); a file that cannot be read raises ``Unreadable`` with the reason a person can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARKDOWN = {".md", ".markdown", ".mdx"}
TEXT = {".txt", ".text", ".rst", ".org", ".adoc", ".tex", ".log"}
HTML = {".html", ".htm", ".xhtml"}
CODE = {
    ".py",
    ".js",
    ".ts",
    ".tsx",
    ".jsx",
    ".go",
    ".rs",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".java",
    ".kt",
    ".swift",
    ".rb",
    ".php",
    ".cs",
    ".scala",
    ".sh",
    ".bash",
    ".zsh",
    ".sql",
    ".r",
    ".jl",
    ".lua",
    ".pl",
    ".toml",
    ".yaml",
    ".yml",
    ".json",
    ".ini",
    ".cfg",
    ".css",
    ".scss",
    ".vue",
    ".svelte",
    ".m",
    ".mm",
}
KINDS = {
    **{e: "markdown" for e in MARKDOWN},
    **{e: "text" for e in TEXT},
    **{e: "html" for e in HTML},
    **{e: "code" for e in CODE},
    ".pdf": "pdf",
    ".docx": "docx",
}


class Unreadable(Exception):
    """The file is skipped; the message says why (encrypted, binary, undecodable, …)."""


@dataclass
class Block:
    """A run of text from one place in a file: ``line`` (1-based, text files) or ``page`` (PDF) where it
    starts, and the heading it sits under ("Intro > Setup")."""

    text: str
    line: int | None = None
    page: int | None = None
    heading: str | None = None


def kind_of(path: Path) -> str | None:
    return KINDS.get(path.suffix.lower())


def extract(path: Path, data: bytes) -> list[Block]:
    kind = kind_of(path)
    if kind is None:
        raise Unreadable(f"{path.suffix or 'no extension'} files are not indexed")
    if kind == "pdf":
        return _pdf(data)
    if kind == "docx":
        return _docx(data)
    text = decode(data)
    if kind == "markdown":
        return _markdown(text)
    if kind == "html":
        return _html(text)
    return _lines(text, heading=None)


def decode(data: bytes) -> str:
    """UTF-8, else the encoding charset-normalizer finds (GBK notes are common); binary is refused."""
    if b"\x00" in data[:8192]:
        raise Unreadable("binary file (contains NUL bytes)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        raise Unreadable("not text in any encoding recognised")
    return str(best)


def _lines(text: str, heading: str | None, first_line: int = 1) -> list[Block]:
    """Paragraphs (blank-line separated), each with the line it starts on."""
    blocks: list[Block] = []
    current: list[str] = []
    start = first_line
    for number, line in enumerate(text.splitlines(), start=first_line):
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            blocks.append(Block("\n".join(current), line=start, heading=heading))
            current = []
    if current:
        blocks.append(Block("\n".join(current), line=start, heading=heading))
    return blocks


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _markdown(text: str) -> list[Block]:
    """Paragraphs under their heading path; headings inside code fences are code, not headings."""
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    section: list[str] = []
    section_start = 1
    in_fence = False

    def flush() -> None:
        if section:
            heading = " > ".join(t for _, t in path) or None
            blocks.extend(_lines("\n".join(section), heading, first_line=section_start))

    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            flush()
            level = len(match.group(1))
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, match.group(2))]
            section, section_start = [], number + 1
        else:
            if not section:
                section_start = number
            section.append(line)
    flush()
    return blocks


def _html(text: str) -> list[Block]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    for element in soup.find_all(
        ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "blockquote", "dd", "dt"]
    ):
        if element.find_parent(["p", "li", "pre", "td", "blockquote"]) is not None:
            continue  # its text is part of the enclosing block
        content = element.get_text(" ", strip=True)
        if not content:
            continue
        if element.name[0] == "h" and element.name[1:].isdigit():
            level = int(element.name[1:])
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, content)]
            continue
        blocks.append(
            Block(content, line=getattr(element, "sourceline", None), heading=" > ".join(t for _, t in path) or None)
        )
    if not blocks and soup.get_text(strip=True):
        blocks = _lines(soup.get_text("\n"), heading=None)
    return blocks


def _pdf(data: bytes) -> list[Block]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise Unreadable("encrypted PDF (it needs a password)")
            except Unreadable:
                raise
            except Exception:
                raise Unreadable("encrypted PDF (it needs a password)") from None
        blocks: list[Block] = []
        for number, page in enumerate(reader.pages, start=1):
            text = page.extract_text() or ""
            blocks.extend(Block(b.text, page=number) for b in _lines(text, heading=None))
    except Unreadable:
        raise
    except PdfReadError as exc:
        raise Unreadable(f"damaged PDF ({exc})") from None
    except Exception as exc:  # pypdf fails in many ways on a damaged file (KeyError, TypeError, RecursionError …)
        raise Unreadable(f"damaged PDF ({type(exc).__name__}: {exc})") from None
    if not blocks:
        raise Unreadable("PDF without a text layer (scanned pages need OCR first)")
    return blocks


def _docx(data: bytes) -> list[Block]:
    try:
        return _docx_blocks(data)
    except Exception as exc:  # python-docx has no error type of its own: a damaged part fails anywhere inside it
        raise Unreadable(f"damaged DOCX ({type(exc).__name__}: {exc})") from None


def _docx_blocks(data: bytes) -> list[Block]:
    import io

    import docx

    document = docx.Document(io.BytesIO(data))
    blocks: list[Block] = []
    path: list[tuple[int, str]] = []
    for number, paragraph in enumerate(document.paragraphs, start=1):
        text = paragraph.text.strip()
        if not text:
            continue
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        if style.startswith("Heading") and style[7:].strip().isdigit():
            level = int(style[7:])
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, text)]
            continue
        # DOCX has no lines or pages before layout; the paragraph number locates the text
        blocks.append(Block(text, line=number, heading=" > ".join(t for _, t in path) or None))
    return blocks
