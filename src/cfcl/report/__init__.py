"""Run report: figures, summary.md and a self-contained index.html."""
