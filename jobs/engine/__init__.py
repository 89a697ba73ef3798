"""Spark plumbing for the entry points: the session (jobs/engine/session.py) and the stages run on Spark
(jobs/engine/pipeline.py)."""
