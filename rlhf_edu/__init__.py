"""rlhf-edu: a hands-on RLHF textbook that runs.

Two mirrored trees hold every formula of the book:

- ``rlhf_edu.numpy``: the NumPy references, written as plainly as the math;
- ``rlhf_edu.torch``: the PyTorch twins, same module and function names, any device.

Like d2l's ``from d2l import torch as d2l``, one import gives a chapter everything::

    from rlhf_edu import numpy as rn
    from rlhf_edu import torch as rt
    rn.kl_divergence([0.7, 0.2, 0.1], [0.5, 0.3, 0.2])   # 0.0851...

The training layer (``rlhf_edu.lm``, ``rlhf_edu.tasks``, ``rlhf_edu.train``) builds on the torch twins.
The chapters print the library's code with ``rlhf_edu.source_listing`` (from ``rlhf_edu.listing``): a function's
source without its docstring.
"""

from rlhf_edu.listing import source_listing

__version__ = "0.1.0"
__all__ = ["source_listing"]
