"""Example candidate: three hand-written layers for gradcheck to validate.

* ``layer_norm`` in NumPy: a forward and a hand-written backward;
* ``gelu`` (both forms) as a ``torch.autograd.Function`` with its own backward;
* ``scale_norm``, an op gradcheck's catalogue does not have, declared with its own
  ``OpDef`` (shape rule, how to draw its hyperparameters, where it fits), a
  NumPy implementation, and a plain torch formula as the independent side.
"""

from .layers import candidate

__all__ = ["candidate"]
