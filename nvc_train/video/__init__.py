"""Raw YUV / y4m / container readers and writers, colour conversion, pad and crop."""

from nvc_train.video.frame import VideoInfo, YUVFrame

__all__ = ["VideoInfo", "YUVFrame"]
