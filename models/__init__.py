"""Codec networks (scene-agnostic and scene-adaptive) and their registry.

Empty until the first neural codec lands: the evaluation runner reaches codecs only through
``configs/codec/*.yaml`` ``_target_`` entries, never by importing this package by name.
"""
