"""The restore-time forecast (runbooks/kit/backups.py) on a synthetic backup history: the
predicted restore time is the newest backup's size over the measured throughput, and the date
a linear fit of backup growth crosses the RTO is right to the day (hand-computed, and the
standard library's statistics.linear_regression as an independent fit)."""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime

import pytest

from runbooks.kit.backups import forecast_restore

DAY = 86400.0
START = datetime(2027, 1, 1, 3, tzinfo=UTC).timestamp()  # nightly at 03:00
GB = 1_000_000_000


def history(
    days: int, *, base: float, per_day: float, wobble: float = 0.0
) -> list[tuple[float, int]]:
    """A nightly backup per day; ``wobble`` alternates ± around the line (pairs cancel)."""
    return [
        (START + d * DAY, round(base + per_day * d + (wobble if d % 2 else -wobble)))
        for d in range(days)
    ]


def test_the_crossing_date_of_a_growing_database_to_the_day() -> None:
    # 100 GB growing 1 GB a night; 50 MB/s restores; RTO 1 h: the limit is 180 GB, reached
    # 80 days after 1 January 2027 03:00, on 22 March 2027 at 03:00 (hand-computed).
    sizes = history(60, base=100 * GB, per_day=1 * GB)
    found = forecast_restore(sizes, throughput=50_000_000, rto=3600)
    assert found.limit_bytes == 180 * GB
    assert found.predicted == pytest.approx(sizes[-1][1] / 50_000_000)  # about 53 minutes
    assert found.crosses_at is not None
    assert datetime.fromtimestamp(found.crosses_at, UTC).date() == date(2027, 3, 22)
    assert abs(found.crosses_at - datetime(2027, 3, 22, 3, tzinfo=UTC).timestamp()) < 60
    # The standard library's least squares, an independent fit, agrees.
    slope, intercept = statistics.linear_regression([t for t, _ in sizes], [s for _, s in sizes])
    oracle = (180 * GB - intercept) / slope
    assert abs(oracle - found.crosses_at) < 3600
    assert found.growth_per_day == pytest.approx(1 * GB)


def test_no_growth_never_crosses_and_an_over_target_restore_is_late_now() -> None:
    flat = forecast_restore(history(10, base=10 * GB, per_day=0), throughput=50_000_000, rto=3600)
    assert flat.crosses_at is None and flat.predicted == 200.0
    late = forecast_restore(history(10, base=300 * GB, per_day=GB), throughput=50_000_000, rto=3600)
    assert late.predicted > 3600 and late.crosses_at == START + 9 * DAY  # the newest backup
    with pytest.raises(ValueError, match="positive throughput"):
        forecast_restore(history(3, base=GB, per_day=0), throughput=0, rto=3600)
