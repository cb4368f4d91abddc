"""The codec protocol, conventional codecs (ffmpeg encoders, reference binaries, CSV import)."""

from nvc_train.codecs.base import Codec, CodecError, DecodeResult, EncodeResult

__all__ = ["Codec", "CodecError", "DecodeResult", "EncodeResult"]
