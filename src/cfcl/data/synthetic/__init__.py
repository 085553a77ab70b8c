"""The synthetic multi-scanner chest radiograph benchmark (docs/benchmark.md).

A structural causal model we control completely: patient attributes -> anatomy -> physical
attenuation image; age (and optionally the scanner) -> disease -> lesions in the lung fields;
scanner -> acquisition applied with exogenous per-image noise, so the true counterfactual of
every image under every scanner is known exactly.
"""
