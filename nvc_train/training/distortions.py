"""The names of the distortions a loss can use, in a module without torch: the preset checks
(:mod:`nvc_train.training.presets`) read them before any fit, the losses
(:mod:`nvc_train.training.losses`) compute them."""

DISTORTIONS = ("mse", "mse_420", "msssim", "mse_yuv_rgb", "l1_msssim_rgb")
