"""portprint.conf: the defaults (base.yml, local.yml, databricks.yml) and their typed loader (config.py), which
every entry point calls once."""
