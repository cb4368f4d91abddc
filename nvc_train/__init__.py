"""nvc-train: train neural video codecs and benchmark them, neural and conventional, under CTC.

Sub-packages that import neither Lightning nor any model (usable alone, fast to import):
``video``, ``metrics``, ``bdrate``, ``ctc``, ``structure``, ``codecs``, ``evaluation``.
"""

__version__ = "0.1.0"
