"""Finetuning (and, later, pretraining): recipes, the memory estimator, one training loop, the job around it.

``loop`` and ``memory`` import nothing from the catalog or the UI, so the loop runs on a bare GPU
machine (``python -m internlocal.train.loop RUN_DIR`` or under ``torchrun``).
"""
