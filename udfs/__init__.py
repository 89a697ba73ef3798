"""portprint.udfs."""
