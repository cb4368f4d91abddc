"""Training: the rate-distortion LightningModule, its losses, W&B that never hangs, ``train(cfg)``, and
the per-sequence fit of scene-adaptive codecs.

Modules: :mod:`.rd_module` (``RDModule``), :mod:`.losses` (rate and distortion terms),
:mod:`.loggers` (``wandb_logger``), :mod:`.train` (``train``), :mod:`.overfit` (``fit_sequence``,
``OverfitModule``), :mod:`.presets` (the fit's typed configs, no Lightning), :mod:`.stages`,
:mod:`.errors`. Imported by name only where used, so that ``import nvc_train`` never pulls in
Lightning.
"""
