import pytest
from monai.data import get_track_meta, set_track_meta


@pytest.fixture(autouse=True, scope="module")
def _monai_defaults():
    """These tests check affines and meta: run them (and module fixtures) with MONAI's default metadata tracking."""
    previous = get_track_meta()
    set_track_meta(True)
    yield
    set_track_meta(previous)
