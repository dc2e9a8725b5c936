"""PyTorch twins of the NumPy references: same modules, same names, same arguments, any device.

``from rlhf_edu import torch as rt`` gives every public function of every module here, e.g.
``rt.kl_divergence``, ``rt.gae``, ``rt.dpo_loss``. They take tensors on any device and of any float
dtype, and ``tests/test_twins.py`` checks each against its ``rlhf_edu.numpy`` reference (values and
gradients, on the CPU and on CUDA when present).
"""

from rlhf_edu.numpy import MODULES, export_modules

__all__ = export_modules(__name__, globals())
