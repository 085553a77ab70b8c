"""Counterfactual quality: ``metrics`` (the maths), ``inputs`` (the intervention, generator adapters,
judge policy), ``measure`` (per-image records), ``summary`` (``cf_quality.json``) and its stage
``evaluate`` (``cfcl cf evaluate``)."""
