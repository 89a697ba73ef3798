"""Is a SQL statement a read? The guard that keeps `portprint sql` read-only unless --write; called by cli.py.

Reads are queries (SELECT, WITH ... SELECT, VALUES, TABLE, FROM ... SELECT), SHOW, DESCRIBE (with Delta's
DESCRIBE HISTORY and DESCRIBE DETAIL) and EXPLAIN, which plans a statement without running it. Time
travel (``VERSION AS OF``, ``TIMESTAMP AS OF``) is part of a query. Everything else, INSERT, UPDATE, DELETE,
MERGE, DROP, CREATE, ALTER, TRUNCATE, but also SET, CACHE, REFRESH, OPTIMIZE, VACUUM, RESTORE, is refused.

Only the statement's verb matters (after comments, string literals and a WITH clause's definitions), so
this is a small tokenizer rather than a SQL parser: a general parser (sqlglot) does not know every Spark
and Delta statement (DESCRIBE HISTORY, RESTORE, OPTIMIZE ... ZORDER BY) and would have to guess on them.
It guards against mistakes, not against a hostile user, who runs with their own access to the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

READ_VERBS = {"SELECT", "VALUES", "TABLE", "SHOW", "DESCRIBE", "DESC", "EXPLAIN"}
WRITE_VERBS = {"INSERT", "UPDATE", "DELETE", "MERGE", "DROP", "CREATE", "ALTER", "TRUNCATE", "REPLACE"}

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SqlSyntaxProblem(ValueError):
    """The statement cannot be split into tokens (an unclosed quote or comment)."""


@dataclass(frozen=True)
class Token:
    kind: str   # word, ident (backticked), str, group (a parenthesised part, collapsed), sym, end (;)
    text: str   # upper case for words


def _skip_comment(sql: str, i: int) -> int:
    if sql.startswith("--", i):
        j = sql.find("\n", i)
        return len(sql) if j < 0 else j + 1
    depth, i = 1, i + 2  # Spark's bracketed comments nest
    while depth:
        if i >= len(sql):
            raise SqlSyntaxProblem("a /* comment is not closed")
        if sql.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif sql.startswith("*/", i):
            depth, i = depth - 1, i + 2
        else:
            i += 1
    return i


def _skip_quoted(sql: str, i: int) -> int:
    quote, i = sql[i], i + 1
    while i < len(sql):
        if sql[i] == "\\" and quote != "`":
            i += 2
        elif sql[i] == quote:
            if sql.startswith(quote * 2, i):  # a doubled quote stands for itself
                i += 2
            else:
                return i + 1
        else:
            i += 1
    raise SqlSyntaxProblem(f"a {quote} quote is not closed")


def tokens(sql: str) -> list[Token]:
    """Top-level tokens: comments dropped, each parenthesised part one ``group`` token."""
    out: list[Token] = []
    depth, i = 0, 0
    while i < len(sql):
        c = sql[i]
        if c.isspace():
            i += 1
        elif sql.startswith("--", i) or sql.startswith("/*", i):
            i = _skip_comment(sql, i)
        elif c in "'\"`":
            j = _skip_quoted(sql, i)
            if depth == 0:
                out.append(Token("ident" if c == "`" else "str", sql[i:j]))
            i = j
        elif c == "(":
            if depth == 0:
                out.append(Token("group", "("))
            depth, i = depth + 1, i + 1
        elif c == ")":
            depth, i = max(depth - 1, 0), i + 1
        elif c == ";" and depth == 0:
            out.append(Token("end", ";"))
            i += 1
        else:
            m = _WORD.match(sql, i)
            if m:
                if depth == 0:
                    out.append(Token("word", m.group(0).upper()))
                i = m.end()
            else:
                if depth == 0:
                    out.append(Token("sym", c))
                i += 1
    return out


def _statements(toks: list[Token]) -> list[list[Token]]:
    out, current = [], []
    for t in toks:
        if t.kind == "end":
            if current:
                out.append(current)
            current = []
        else:
            current.append(t)
    if current:
        out.append(current)
    return out


def _after_with(stmt: list[Token]) -> list[Token]:
    """The statement a WITH clause leads to: skip ``name [(cols)] AS (query)`` entries, comma-separated."""
    i = 1
    if i < len(stmt) and stmt[i] == Token("word", "RECURSIVE"):
        i += 1
    while i < len(stmt):
        i += 1                                       # the name
        if i < len(stmt) and stmt[i].kind == "group":
            i += 1                                   # its column list
        if i < len(stmt) and stmt[i] == Token("word", "AS"):
            i += 1
        if i < len(stmt) and stmt[i].kind == "group":
            i += 1                                   # its query
        if i < len(stmt) and stmt[i] == Token("sym", ","):
            i += 1
            continue
        break
    return stmt[i:]


def verb(stmt: list[Token]) -> str:
    """The statement's verb: its first word, after a WITH clause; FROM-first statements are a query or,
    with an INSERT anywhere at the top level, an INSERT."""
    if stmt and stmt[0].kind == "group":  # (SELECT ...) UNION (SELECT ...)
        return "SELECT"
    if not stmt or stmt[0].kind != "word":
        return stmt[0].text if stmt else ""
    first = stmt[0].text
    if first == "WITH":
        return verb(_after_with(stmt))
    if first == "FROM":
        return "INSERT" if any(t == Token("word", "INSERT") for t in stmt) else "SELECT"
    return first


def refusal(sql: str) -> str | None:
    """None when every statement in ``sql`` only reads; otherwise one line saying why not and what to do."""
    try:
        statements = _statements(tokens(sql))
    except SqlSyntaxProblem as exc:
        return f"cannot read the statement: {exc}"
    if not statements:
        return "no SQL statement given"
    for stmt in statements:
        v = verb(stmt)
        if v in READ_VERBS:
            continue
        if v in WRITE_VERBS:
            return f"portprint sql is read-only: {v} would change the warehouse; add --write to run it"
        return (f"portprint sql runs queries, SHOW, DESCRIBE and EXPLAIN; {v or 'this statement'} is none of "
                "them; add --write to run it anyway")
    return None
