"""One LightningModule per task; each builds its network from the registry by name."""

from zoo.tasks.classification import ImageClassifier

__all__ = ["ImageClassifier"]
