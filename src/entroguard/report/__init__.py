"""Reports: tables and figures from measured results."""
