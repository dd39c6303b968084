"""cnnlab's `hydra/launcher=auto` (conf/hydra/launcher/auto.yaml); Hydra loads launchers only
from its `hydra_plugins` package, so the class lives here and the choice in cnnlab."""
