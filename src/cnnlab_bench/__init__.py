"""The benchmark: cnnlab's pipeline against a bare PyTorch loop and a minimal LightningModule."""
