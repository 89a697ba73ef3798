"""portprint.models."""
