"""Helpers for testing ferryman code and new stores with pytest.

``from ferryman.testing import StoreContract`` gives the contract suite every store must pass
(see :mod:`ferryman.testing.store_suite`).
"""

import pytest

# Plain asserts in the suite should explain their failures as they do in a test module.
pytest.register_assert_rewrite("ferryman.testing.store_suite")

from .store_suite import (  # noqa: E402
    COMPOSITE_KEY,
    INT_KEY,
    TEXT_KEY,
    Layout,
    StoreContract,
    StoreFactory,
    create_test_table,
)

__all__ = ["COMPOSITE_KEY", "INT_KEY", "TEXT_KEY", "Layout", "StoreContract", "StoreFactory", "create_test_table"]
