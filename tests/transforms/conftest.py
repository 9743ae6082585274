from tests.data.conftest import _monai_defaults  # noqa: F401  (the same autouse fixture: MONAI's defaults)
