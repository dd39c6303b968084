"""cnnlab: the assignment's CNN experiments as a PyTorch Lightning + Hydra research template.

Importing it changes nothing in the process: entry points call
`cnnlab.process_setup.set_up_process` first."""

__version__ = "0.1.0"
