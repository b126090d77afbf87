"""Training data: reading dataset files in their common forms, rendering them for training, the dataset library.

``formats`` and ``rendering`` import nothing from the catalog or the UI: the training loop uses
them on a bare GPU machine. ``library`` keeps imported datasets in the catalog.
"""
