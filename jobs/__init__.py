"""portprint.jobs: the entry points (cli, score, train, evaluate, ingest, report, sql, sample) and their plumbing
(archive/ = Source, warehouse/ = Sink, engine/ = Spark session and stage runners)."""
