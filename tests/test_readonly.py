"""`portprint sql` is read-only unless --write: the statement classifier, and the CLI refusing before any Spark."""

from __future__ import annotations

import pytest

from portprint.jobs.cli import main
from portprint.jobs.engine.readonly import refusal, tokens

READS = [
    "SELECT * FROM anomalies",
    "select date, count(*) from anomalies group by 1",
    "  \n SELECT 1;  ",
    "-- the worst first\nSELECT * FROM anomalies ORDER BY score DESC",
    "/* DROP TABLE anomalies */ SELECT 1",
    "/* nested /* DELETE */ still a comment */ SELECT 1",
    "SELECT 'DROP TABLE anomalies; DELETE FROM runs' AS note",
    "SELECT \"it's\" AS a, 'a\\'; DROP TABLE x' AS b",
    "SELECT `delete` FROM `insert`",
    "WITH d AS (SELECT * FROM anomalies) SELECT * FROM d",
    "with recursive r (n) as (select 1), s as (select * from r) select * from s",
    "WITH x AS (SELECT 1 AS delete_me) (SELECT * FROM x) UNION ALL (SELECT 2)",
    "(SELECT 1) UNION (SELECT 2)",
    "VALUES (1), (2)",
    "TABLE anomalies",
    "FROM anomalies SELECT src_ip",
    "SHOW TABLES",
    "DESCRIBE HISTORY delta.`/wh/anomalies`",
    "desc detail delta.`/wh/anomalies`",
    "DESCRIBE TABLE EXTENDED anomalies",
    "EXPLAIN SELECT * FROM anomalies",
    "EXPLAIN INSERT INTO anomalies SELECT * FROM anomalies",   # planned, never run
    "SELECT * FROM delta.`/wh/anomalies` VERSION AS OF 3",
    "SELECT * FROM delta.`/wh/anomalies` TIMESTAMP AS OF '2026-11-20 00:00:00'",
    "SELECT count(*) FROM anomalies WHERE detector = 'update'",
]

WRITES = [
    ("INSERT INTO anomalies SELECT * FROM anomalies", "INSERT"),
    ("insert overwrite table anomalies select * from anomalies", "INSERT"),
    ("UPDATE anomalies SET score = 0", "UPDATE"),
    ("DELETE FROM anomalies WHERE date = '2026-11-01'", "DELETE"),
    ("MERGE INTO runs r USING x ON r.run_id = x.run_id WHEN MATCHED THEN DELETE", "MERGE"),
    ("DROP TABLE anomalies", "DROP"),
    ("CREATE TABLE t USING DELTA AS SELECT 1", "CREATE"),
    ("ALTER TABLE anomalies ADD COLUMN x INT", "ALTER"),
    ("TRUNCATE TABLE anomalies", "TRUNCATE"),
    ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE"),
    ("REPLACE TABLE t USING DELTA AS SELECT 1", "REPLACE"),
    ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT"),
    ("with x (a) as (select 1), y as (select 2) delete from t", "DELETE"),
    ("FROM anomalies INSERT INTO t SELECT src_ip", "INSERT"),
    ("SELECT 1; DROP TABLE anomalies", "DROP"),
    ("/* a read */ SELECT 1; -- then\n delete from runs", "DELETE"),
    ("-- SELECT\nDROP TABLE anomalies", "DROP"),
]

NEITHER = ["SET spark.sql.shuffle.partitions = 1", "OPTIMIZE anomalies", "VACUUM anomalies",
           "RESTORE TABLE anomalies TO VERSION AS OF 1", "CACHE TABLE anomalies", "REFRESH TABLE anomalies",
           "USE other", "ADD JAR /tmp/x.jar"]


@pytest.mark.parametrize("sql", READS)
def test_reads_pass(sql):
    assert refusal(sql) is None


@pytest.mark.parametrize(("sql", "verb"), WRITES)
def test_writes_are_refused_by_name(sql, verb):
    message = refusal(sql)
    assert message is not None and "\n" not in message
    assert f"{verb} would change the warehouse" in message and "--write" in message


@pytest.mark.parametrize("sql", NEITHER)
def test_statements_that_are_not_reads_are_refused(sql):
    message = refusal(sql)
    assert message is not None and "--write" in message and "\n" not in message
    assert sql.split()[0].upper() in message


@pytest.mark.parametrize("sql", ["SELECT 'unclosed", "SELECT 1 /* open", "", "  ;  ; "])
def test_unreadable_or_empty_is_refused(sql):
    assert refusal(sql) is not None


def test_parenthesised_parts_collapse_and_comments_vanish():
    kinds = [(t.kind, t.text) for t in tokens("with a as (select ';' /* ) */) select * from a -- x")]
    assert kinds == [("word", "WITH"), ("word", "A"), ("word", "AS"), ("group", "("), ("word", "SELECT"),
                     ("sym", "*"), ("word", "FROM"), ("word", "A")]


def test_cli_refuses_before_starting_spark(monkeypatch, tmp_path, capsys):
    import portprint.jobs.engine.session as session

    def no_spark(*a, **k):
        raise AssertionError("a refused statement must not start Spark")

    monkeypatch.setattr(session, "build_session", no_spark)
    assert main(["sql", "--warehouse", str(tmp_path), "DELETE FROM anomalies"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["portprint: error: portprint sql is read-only: DELETE would change the warehouse; "
                   "add --write to run it"]
