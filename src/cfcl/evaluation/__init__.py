"""Evaluation: linear probes, fine-tuning, metrics with intervals, embedding analysis (docs/architecture.md, "Evaluation
protocols")."""
