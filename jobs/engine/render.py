"""Safe rendering of text that came from traffic (names, prefixes, and anything an archive or an analyst's SQL put
in a string column), for terminals, HTML, Markdown, CSV and JSON. Called by the report, the export and the CLI.

Control characters never reach an output as themselves: C0, DEL, C1, the Unicode bidirectional overrides and
isolates, zero-width and line/paragraph separators, and undecodable bytes are shown as escapes (``\\x1b``,
``\\u202e``). The standard library escapes HTML (``html.escape``); Markdown has no library escape function,
so ``md`` backslash-escapes the characters that mean something inline (CommonMark lets any ASCII punctuation
be escaped), a block marker at the start, and writes ``<``, ``>`` and ``&`` as entities; pipes stay in
their table cell.
"""

from __future__ import annotations

import html
import re

# Characters shown as escapes: C0 and DEL, C1, soft hyphen, zero-width and directional formatting, line and
# paragraph separators, BOM, and lone surrogates (undecodable bytes arrive as U+DC80..U+DCFF).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
                     "\ud800-\udfff]")
_MD_INLINE = frozenset("\\`*_[](){}!|~")
_MD_LEADING = re.compile(r"^([#+=-]|\d+(?=[.)]))")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _escape_char(m: re.Match) -> str:
    c = ord(m.group(0))
    if 0xDC80 <= c <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{c - 0xDC00:02x}"
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def text(value: object) -> str:
    """Any value as one line of inert text: control and invisible formatting characters as escapes."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="surrogateescape")
    return _UNSAFE.sub(_escape_char, str(value))


def from_bytes(raw: bytes | None) -> str | None:
    """A string column's raw bytes (possibly not UTF-8) as inert text."""
    return None if raw is None else text(raw)


def html_text(value: object) -> str:
    """Inert text escaped for HTML element content and quoted attribute values."""
    return html.escape(text(value), quote=True)


def md(value: object) -> str:
    """Inert text for Markdown, table cells included: punctuation backslash-escaped, < > & as entities."""
    entities = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
    out = "".join(entities.get(ch) or ("\\" + ch if ch in _MD_INLINE else ch) for ch in text(value))
    m = _MD_LEADING.match(out)
    if m:  # a list, heading or setext marker at the start of a paragraph
        end = m.end()
        out = "\\" + out if not out[0].isdigit() else out[:end] + "\\" + out[end:]
    return out


def csv_cell(value: object) -> str:
    """Inert text for a CSV cell: escapes as ``text``, and a cell a spreadsheet would read as a formula
    (starting with = + - @, tab or carriage return) gets a leading apostrophe (OWASP's CSV injection advice)."""
    raw = "" if value is None else str(value)
    if raw.startswith(_FORMULA):
        return "'" + text(raw)
    return text(raw)


def terminal(value: bytes | str | None) -> str | None:
    """A table cell that is safe to print on a terminal, whatever bytes it came from (`sql`, `evaluate`).

    UTF-8 is decoded; a byte that is not UTF-8 becomes ``\\xNN``; every other character Python does not
    call printable becomes ``\\xNN`` (ASCII controls: NUL, ESC, DEL, ...) or ``\\uNNNN``/``\\UNNNNNNNN``
    (C1 controls, bidi and zero-width format characters, line and paragraph separators); a backslash is
    doubled so an escape cannot be forged, and ``|`` becomes ``\\|`` so a cell cannot fake a column of the
    table. The escaping is reversible: the original bytes can be read back from the text.
    """
    if value is None:
        return None
    text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
    out = []
    for ch in text:
        c = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == "|":
            out.append("\\|")
        elif 0xDC80 <= c <= 0xDCFF:  # a byte surrogateescape kept because it was not UTF-8
            out.append(f"\\x{c - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif c < 0x80:
            out.append(f"\\x{c:02x}")
        elif c < 0x10000:
            out.append(f"\\u{c:04x}")
        else:
            out.append(f"\\U{c:08x}")
    return "".join(out)
