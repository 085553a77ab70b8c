"""Classifiers of one discrete parent (the scanner, sex): ``model`` (the network and ``classifier.pt``),
``module`` (its thin Lightning module) and its stage ``train`` (``cfcl cf classifier``)."""
