"""Entropy models: likelihoods for training and real, deterministic coding through constriction.

- :class:`EntropyBottleneck`: factorized learned per-channel density (hyper-latents z).
- :class:`GaussianConditional`: Gaussian with mean and scale from a hyperprior / context (latents y).
- :func:`quantize`: the named rounding roles (``noise``, ``ste``, ``dequantize``, ``symbols``).

Both models pair ``forward`` (values and likelihoods) with ``compress``/``decompress`` over integer
CDF tables that ``update()`` builds into checkpointed buffers; see :mod:`nvc_train.entropy.coder`
for how encoder and decoder are guaranteed the same integer model. ``encode_into`` / ``decode_from``
code several latents into ONE :class:`AnsEncoder` stream, so a frame pays the coder's flush once.
:func:`coding_parameters` is the rule for the network that computes a latent's scales and means
when coding (float64 on the CPU, rounded once to float32; see :mod:`nvc_train.entropy.coding_parameters`).
"""

from nvc_train.entropy.bottleneck import EntropyBottleneck
from nvc_train.entropy.coder import PRECISION, AnsDecoder, AnsEncoder, EntropyCoderError
from nvc_train.entropy.coding_parameters import coding_parameters
from nvc_train.entropy.gaussian import GaussianConditional
from nvc_train.entropy.ops import lower_bound, quantize

__all__ = [
    "PRECISION",
    "AnsDecoder",
    "AnsEncoder",
    "EntropyBottleneck",
    "EntropyCoderError",
    "GaussianConditional",
    "coding_parameters",
    "lower_bound",
    "quantize",
]
