"""The counterfactual generator (a conditional HVAE as the image mechanism of a deep SCM), its
training, counterfactual fine-tuning and inference, the counterfactual store, domain classifiers
and counterfactual quality.

Modules: ``parents`` (parent specs and values), ``likelihood`` and ``losses`` (ELBO terms, guidance,
Lagrangian), ``hvae`` (the model), ``inference`` (abduction, counterfactuals), ``generator``
(checkpoints), ``config`` (one config per stage), ``data``, ``module`` / ``finetune_module`` /
``classifier_module`` (thin Lightning modules), ``train`` / ``finetune`` / ``generate`` /
``classifier_stage`` / ``quality_stage`` (stages), ``figures``; ``classifier`` (the scanner
classifiers), ``quality`` (the maths), ``quality_inputs`` (generator adapters, judge policy),
``quality_measure`` and ``quality_summary`` judge the counterfactuals.
"""
