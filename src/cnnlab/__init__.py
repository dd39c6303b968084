"""cnnlab: the seed's CNN experiments as a PyTorch Lightning + Hydra research template."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# Used by conf/hydra/default.yaml so that two runs started in the same instant get distinct
# folders; cached so every process that receives the config sees the same value.
OmegaConf.register_new_resolver("cnnlab_pid", os.getpid, use_cache=True, replace=True)
