"""Shared fixtures: the real test clips of ../shared/data/clips and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _clips_dir() -> Path:
    override = os.environ.get("NVC_TEST_CLIPS")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data" / "clips"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    """Folder of real .y4m clips (CI has it beside the clone); tests skip with the reason if absent."""
    directory = _clips_dir()
    if not directory.is_dir() or not any(directory.glob("*.y4m")):
        pytest.skip(f"real test clips not found in {directory} (set NVC_TEST_CLIPS to their folder)")
    return directory
