"""Evaluation: linear probes, fine-tuning, metrics with intervals, embedding analysis (DESIGN §5)."""
