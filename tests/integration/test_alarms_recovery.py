"""Alarm correlation survives kill -9: state comes back from the changelog.

In its own module on purpose: a second alarms worker alive at the same time (the
module-scoped one of test_alarms_correlation.py) would correlate the same alarms and
publish the same incident ids to oss.incidents.
"""
from __future__ import annotations

from collections import Counter

import pytest

from tests.helpers import produce, unique
from tests.integration.test_alarms_correlation import (
    alarm,
    load_reference,
    ne,
    start_worker,
    subscriber,
    wait_incidents,
)

pytestmark = pytest.mark.integration


def test_state_survives_kill_and_recovers_from_changelog(broker, tmp_path):
    """ONU incidents opened by one worker are taken over after a kill -9, by a worker
    with an empty data directory (state restored from the changelogs only), and no
    incident event is published twice."""
    u = unique("KR")
    app_id = f"telbus-it-{u}"
    olt, agg = f"{u}-OLT", f"{u}-AGG"
    onus = [(f"{u}-ONU{i}", f"{u}-S{i}") for i in range(1, 4)]
    first = start_worker(app_id, f"{u}a", tmp_path)
    try:
        load_reference(first, [ne(olt, None, agg, "OLT")] + [ne(n, olt, s) for n, s in onus],
                       [subscriber(f"{u}-U{i}", n) for i, (n, _s) in enumerate(onus)], u)
        produce("oss.alarm.raw", [alarm(f"{u}-A{i}", n, s, i) for i, (n, s) in enumerate(onus)])
        prefix = f"INC-{u}-"
        wait_incidents(prefix, 3, "three ONU incidents opened")
    finally:
        first.kill9()
    # its own Faust group, so it need not wait for the dead worker's Faust session
    second = start_worker(app_id, f"{u}b", tmp_path, faust_app_id=f"{app_id}-2")
    try:
        produce("oss.alarm.raw", [alarm(f"{u}-OLTA", olt, agg, 22, "EQUIPMENT_FAILURE", "CRITICAL")])
        recs = wait_incidents(prefix, 7, "takeover after restart", timeout=240)
        changes = Counter((v["incident_id"], v["change"]) for *_x, v in recs)
        assert max(changes.values()) == 1, changes
        root = next(v for *_x, v in recs if v["root_ne_id"] == olt)
        assert len(root["alarm_ids"]) == 4 and root["affected_subscribers"] == 3
        assert sum(1 for *_x, v in recs if v["change"] == "MERGED") == 3
    finally:
        second.stop()
