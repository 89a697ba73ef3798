"""Text that is safe to print on a terminal, whatever bytes it came from (used by `sql` and `evaluate`).

Flow ids, addresses, names and labels come from traffic, from the archive or from a labels file: an attacker
can put escape sequences, NUL or invalid UTF-8 in them. Printed through ``inert`` they cannot move the
cursor, retitle the window, hide text or fake a column.
"""

from __future__ import annotations


def inert(value: bytes | str | None) -> str | None:
    """Text that is safe to print on a terminal, whatever bytes it came from.

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
