"""Blocks → chunks: sentence-aligned, sized in characters, with overlap, never across a heading.

A chunk keeps its heading path (embedded with the text, so "Setup" sections find setup questions)
and its span: first/last line for text files, page for PDFs. Sentences end at ``. ! ?`` followed by
space, and at Chinese/Japanese ``。！？；`` with nothing after them needed (CJK has no spaces).
Code is cut at lines instead of sentences.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from internlocal.kb.extract import Block

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[。！？；])[”’」』）]*|\n\s*\n")


@dataclass
class Chunk:
    text: str
    heading: str | None
    start_line: int | None
    end_line: int | None
    page: int | None

    @property
    def embed_text(self) -> str:
        return f"{self.heading}\n{self.text}" if self.heading else self.text

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.embed_text.encode("utf-8")).hexdigest()


@dataclass
class _Piece:
    text: str
    line: int | None
    end_line: int | None
    page: int | None


def sentences(text: str) -> list[tuple[str, int]]:
    """(sentence, character offset) pairs; the sentences' text joined is the input's text."""
    out, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if end > start and text[start:end].strip():
            out.append((text[start:end], start))
        start = end
    if text[start:].strip():
        out.append((text[start:], start))
    return out


def _pieces(block: Block, code: bool) -> list[_Piece]:
    """Sentences (or, for code, lines) of a block, each with the lines it spans."""
    text = block.text
    if code:
        parts, offset = [], 0
        for row in text.split("\n"):
            parts.append((row + "\n", offset))
            offset += len(row) + 1
    else:
        parts = sentences(text)
    pieces = []
    for part, offset in parts:
        if block.line is None:
            line = end = None
        else:
            begins = offset + len(part) - len(part.lstrip())
            line = block.line + text.count("\n", 0, begins)
            end = block.line + text.count("\n", 0, offset + len(part.rstrip()))
        pieces.append(_Piece(part, line, end, block.page))
    return pieces


def chunk_blocks(blocks: list[Block], size: int = 800, overlap: int = 120, code: bool = False) -> list[Chunk]:
    """Pack consecutive sentences under one heading (and one PDF page) into chunks of at most ``size``
    characters (a single longer sentence is cut), each starting with up to ``overlap`` characters
    of the previous chunk's last sentences."""
    if size < 50 or not 0 <= overlap < size:
        raise ValueError("chunk size must be at least 50 characters and the overlap smaller than the size")
    chunks: list[Chunk] = []
    group: list[_Piece] = []
    group_key: tuple | None = None

    def emit(pieces: list[_Piece], heading: str | None) -> None:
        text = "".join(p.text for p in pieces).strip()
        if text:
            lines = [p.line for p in pieces if p.line is not None]
            ends = [p.end_line for p in pieces if p.end_line is not None]
            chunks.append(
                Chunk(text, heading, min(lines) if lines else None, max(ends) if ends else None, pieces[0].page)
            )

    def pack(pieces: list[_Piece], heading: str | None) -> None:
        current: list[_Piece] = []
        length = 0
        for piece in _split_long(pieces, size):
            if current and length + len(piece.text) > size:
                emit(current, heading)
                carried: list[_Piece] = []
                carried_len = 0
                for previous in reversed(current):
                    if carried_len + len(previous.text) > overlap:
                        break
                    carried.insert(0, previous)
                    carried_len += len(previous.text)
                current, length = carried, carried_len
            current.append(piece)
            length += len(piece.text)
        if current:
            emit(current, heading)

    for block in blocks:
        key = (block.heading, block.page)
        if group and group_key is not None and key != group_key:
            pack(group, group_key[0])
            group = []
        group_key = key
        if group:
            group.append(_Piece("\n\n", None, None, block.page))
        group.extend(_pieces(block, code))
    if group and group_key is not None:
        pack(group, group_key[0])
    return chunks


def _split_long(pieces: list[_Piece], size: int) -> list[_Piece]:
    out = []
    for piece in pieces:
        if len(piece.text) <= size:
            out.append(piece)
            continue
        for start in range(0, len(piece.text), size):
            out.append(_Piece(piece.text[start : start + size], piece.line, piece.end_line, piece.page))
    return out
