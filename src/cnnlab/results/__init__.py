"""Results: run records, per-run files and figures, and the sweep report. Imports no torch."""
