"""nvc-train: train neural video codecs and benchmark them, neural and conventional, under CTC.

Sub-packages and modules that import neither Lightning nor any model (usable alone):
``video``, ``metrics``, ``bitstream``, ``bdrate``, ``ctc``, ``structure``, ``codecs``, ``evaluation``,
``complexity``. Lightning enters with ``training`` (the LightningModules and the fits) and
``callbacks`` only; ``tests/test_imports.py`` checks this, and that no module import cycle exists.
"""

__version__ = "0.1.0"
