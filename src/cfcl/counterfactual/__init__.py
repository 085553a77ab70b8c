"""The counterfactual generator (a conditional HVAE as the image mechanism of a deep SCM), the
classifiers of a parent that guide and judge it, the counterfactual store and counterfactual quality.

Sub-packages, one per concept, each holding its stage module (docs/architecture.md, "Layers"):
``generator`` (the HVAE, its maths, training, fine-tuning, checkpoint, figures and the plain
:class:`~cfcl.counterfactual.generator.apply.Generator`), ``classifier`` (classifiers of a parent:
model, Lightning module, training) and ``quality`` (metrics, inputs, per-image measurement, summary,
the ``cf_quality`` stage). Beside them: ``config`` (one config per stage), ``parents`` (parent specs
and values), ``data`` (a store's images and parents as training batches) and ``generate_store``
(``cfcl cf generate``, the counterfactual store).
"""
