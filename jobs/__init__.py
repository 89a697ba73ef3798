"""portprint.jobs."""
