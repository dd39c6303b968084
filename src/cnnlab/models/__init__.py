"""Models: the assignment's nets, the LightningModule that trains any of them, and its metrics."""

from cnnlab.models.classifier import ImageClassifier
from cnnlab.models.nets import net_1, net_2

__all__ = ["ImageClassifier", "net_1", "net_2"]
