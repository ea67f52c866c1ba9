"""Event and result values built from stored or peer-supplied numbers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hushwire.client.events import utc_from_ms


@pytest.mark.parametrize(
    ("ms", "expected"),
    [
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1_700_000_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (2**63 - 1, datetime.max.replace(tzinfo=UTC)),  # a row stored before the bound
    ],
)
def test_utc_from_ms_is_total(ms, expected):
    assert utc_from_ms(ms) == expected
