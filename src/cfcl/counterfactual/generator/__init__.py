"""The counterfactual generator: ``hvae`` (the model), ``likelihood`` and ``losses`` (ELBO terms, guidance,
Lagrangian), ``inference`` (abduction, counterfactuals), ``module`` / ``finetune_module`` (thin Lightning
modules), ``checkpoint`` (``generator.pt``), ``figures``, ``apply`` (the generator as a plain object,
``cfcl cf apply``) and its stages ``train`` (``cfcl cf train``) and ``finetune`` (``cfcl cf finetune``)."""
