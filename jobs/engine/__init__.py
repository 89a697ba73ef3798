"""Plumbing the entry points share: the Spark session and its jars (session.py, jars.py), storage access
(storage.py), the stage runners (pipeline.py), the model lifecycle (lifecycle.py), the SQL guard (readonly.py) and
safe rendering of traffic bytes (render.py)."""
