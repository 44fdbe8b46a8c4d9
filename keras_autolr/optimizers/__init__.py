"""Optimizers for large-batch training: AdamP and LAMB."""

from keras_autolr.optimizers.adamp import AdamP
from keras_autolr.optimizers.lamb import LAMB

__all__ = ["LAMB", "AdamP"]
