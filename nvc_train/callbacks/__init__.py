"""Lightning callbacks of the training path: real-bitstream CTC evaluation, complexity profile,
sample reconstructions, overfit stages. Each is built from ``configs/callbacks`` by its ``_target_``;
what only W&B can show is logged through :mod:`.wandb_media`."""

from nvc_train.callbacks.complexity_profile import ComplexityProfile
from nvc_train.callbacks.ctc_evaluation import CTCEvaluation
from nvc_train.callbacks.overfit_stages import OverfitStages
from nvc_train.callbacks.reconstruction_samples import ReconstructionSamples

__all__ = ["CTCEvaluation", "ComplexityProfile", "OverfitStages", "ReconstructionSamples"]
