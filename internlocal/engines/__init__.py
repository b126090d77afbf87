"""Model runtimes behind one ``Engine`` protocol (``base.py``): llama.cpp, transformers, LMDeploy, remote endpoints."""
