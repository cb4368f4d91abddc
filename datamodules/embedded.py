"""``EmbeddedDataModule``: the built-in clips of :mod:`nvc_train.embedded` as training data.

The default data of ``python train.py``: no download, no data root. The clips are rendered into
the cache folder on first use (in ``prepare_data``, so once per node under DDP) and checked
against their SHA-256 sidecars after that.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datamodules.clips import ClipDataModule, ClipSource
from nvc_train.ctc import embedded_sequences
from nvc_train.embedded import ensure_embedded_clips


class EmbeddedDataModule(ClipDataModule):
    """:class:`ClipDataModule` over the embedded clips (4 camera-motion clips, 320x256, 32 frames).

    Args:
        cache_dir: where the clips are rendered (null: ``$NVC_CACHE_DIR/embedded`` or
            ``~/.cache/nvc_train/embedded``).
        **kwargs: the crop, frame and loader settings of :class:`ClipDataModule`.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        if kwargs.get("clips") or kwargs.get("folder"):
            raise ValueError("the embedded data set has its own clips; use data=folder for others")
        super().__init__(**kwargs)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir not in (None, "") else None

    def prepare_data(self) -> None:
        ensure_embedded_clips(self.cache_dir)

    def describe_source(self) -> str:
        return f"the embedded clips ({self.cache_dir or 'default cache folder'})"

    def find_clips(self) -> list[ClipSource]:
        # Renders again only what is missing (setup can run without prepare_data, e.g. in a test).
        return [(seq.path, seq.info) for seq in embedded_sequences(self.cache_dir)]
