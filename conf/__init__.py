"""portprint.conf."""
