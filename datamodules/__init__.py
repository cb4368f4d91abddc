"""LightningDataModules: clips from a folder (``clips.ClipDataModule``) and the embedded default set.

The embedded clips themselves are made by ``nvc_train.embedded`` so that evaluation needs no data
module; Vimeo-90k and BVI-DVC come with the full-size codecs.
"""
