"""Lightning callbacks of the training path: real-bitstream CTC evaluation, complexity profile,
sample reconstructions (W&B media). Each is built from ``configs/callbacks`` by its ``_target_``."""

from nvc_train.callbacks.complexity_profile import ComplexityProfile
from nvc_train.callbacks.ctc_evaluation import CTCEvaluation
from nvc_train.callbacks.overfit_stages import OverfitStages
from nvc_train.callbacks.wandb_media import ReconstructionSamples

__all__ = ["CTCEvaluation", "ComplexityProfile", "OverfitStages", "ReconstructionSamples"]
