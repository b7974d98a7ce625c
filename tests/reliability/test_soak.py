"""The short soak (issue 11 item 5): bench/soak.py's mixed load for about a minute; RSS and
open descriptors stay flat after the warm-up and every instance ends normally. The 30-minute
run is ``python bench/soak.py``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent.parent / "bench"))

from soak import report, soak  # noqa: E402

SECONDS = float(os.environ.get("EVQ_SOAK_SECONDS", "75"))


def test_short_soak(make_daemon) -> None:
    d = make_daemon()
    result = soak(d, SECONDS, interval=5, warmup=0.3)
    print("\n" + report(result))
    assert len(result.samples) >= SECONDS // 5
    assert not result.lost, result.lost[:10]
    assert result.launched >= SECONDS * 5 and result.scheduled >= SECONDS * 0.8
    assert result.pushes > 0
    assert result.trend.flat, report(result)
