"""Training: the one `train()` run, evaluation, how an entry ends, its checks and callbacks."""

import logging


class _NoAdvertisements(logging.Filter):
    """Lightning's tips about its cloud products ("💡 Tip: ...") say nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡")


for _name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoAdvertisements())
