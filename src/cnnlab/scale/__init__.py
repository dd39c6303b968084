"""Scale-out glue: Hydra's launchers and sweeper and Lightning's DDP, fitted to cnnlab."""
