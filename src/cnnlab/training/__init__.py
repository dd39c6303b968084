"""Training: the one `train()` run, evaluation, how an entry ends, its checks and callbacks."""
