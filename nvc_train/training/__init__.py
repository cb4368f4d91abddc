"""Training: the rate-distortion LightningModule, its losses, W&B that never hangs, and ``train(cfg)``.

Modules: :mod:`.rd_module` (``RDModule``), :mod:`.losses` (rate and distortion terms),
:mod:`.loggers` (``wandb_logger``), :mod:`.train` (``train``). Imported by name only where used,
so that ``import nvc_train`` never pulls in Lightning.
"""
