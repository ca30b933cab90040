"""The Qt window fixtures of tests/qt, for the GUI consent tests."""
from tests.qt.conftest import _isolated_settings, _patient_close, window  # noqa: F401
