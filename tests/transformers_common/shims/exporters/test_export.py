"""Stand-in for transformers' `tests/exporters/test_export.py`, which the PyPI sdist does not ship.

`ModelTesterMixin` derives from `ExportTesterMixin`; without the real file the `torch.export` tests are absent.
"""


class ExportTesterMixin:
    """Empty: the export tests are not part of the sdist."""
