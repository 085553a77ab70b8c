"""The counterfactual generator (a conditional HVAE as the image mechanism of a deep SCM), its
training, counterfactual fine-tuning and inference, the counterfactual store, domain classifiers
and counterfactual quality.

Modules: ``parents`` (parent specs and values), ``likelihood`` and ``losses`` (ELBO terms, guidance,
Lagrangian), ``hvae`` (the model), ``inference`` (abduction, counterfactuals), ``generator``
(checkpoints), ``data``, ``module`` / ``finetune_module`` (thin Lightning modules), ``train`` /
``finetune`` / ``generate`` (stages), ``figures``; ``classifier`` / ``quality`` / ``evaluate`` judge them.
"""
