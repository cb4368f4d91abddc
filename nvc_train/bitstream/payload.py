"""The byte layout a scene-adaptive network hands its adapter: parameters once, then frames.

It lives here, beside the container, rather than with the networks in ``models/``: the adapter
(``nvc_train/codecs/adaptive.py``) builds it from the file's units before any network exists, and
the framework never imports ``models/`` by name.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AdaptivePayload"]


@dataclass
class AdaptivePayload:
    """Everything after the container header: parameters once, then one payload per frame.

    ``frames`` is in display order, ``len == num_frames``; a payload may be empty (an INR sends no
    per-frame data). The adapter writes ``parameters`` as a parameter-set unit and each frame
    payload as a frame unit; the container adds lengths and CRCs.
    """

    parameters: bytes
    frames: list[bytes]
