"""Pure analysis of a run directory: tables in, metric tables and verdicts out (no torch)."""
