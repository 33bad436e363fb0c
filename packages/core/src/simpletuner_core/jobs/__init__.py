"""Jobs: the store, per-job event logs, the trainer-process runner and the GPU-aware queue. Torch-free."""
