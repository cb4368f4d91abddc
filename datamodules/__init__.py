"""LightningDataModules (Vimeo-90k, BVI-DVC, CTC sequences, the embedded default set).

Empty until the training path lands; the embedded clips themselves are made by
``nvc_train.embedded`` so that evaluation needs no data module.
"""
