"""The shell's state persistence (no broker): every change a batch makes reaches the
changelog, and state rebuilt from the compacted changelog continues exactly like the
state that wrote it."""

import importlib
import json

import pytest

T0 = 1_795_000_000_000


@pytest.fixture
def agent(monkeypatch):
    monkeypatch.setenv("TELBUS_ALARMS_IN_WORKER", "0")  # no Faust service in a unit test
    return importlib.import_module("processors.alarms.agent")


def ne(ne_id, parent, t=T0 - 10_000):
    return {"event_id": f"n-{ne_id}-{t}", "event_time": t, "source": "NMS", "ne_id": ne_id,
            "ne_type": "ONU", "parent_ne_id": parent, "site_id": "S", "services": ["BROADBAND"]}


def alarm(n, ne_id, sec, cause="LOS", sev="MAJOR"):
    return {"event_type": "Alarm", "event_id": f"e{n}", "event_time": T0 + sec * 1000, "source": "NMS",
            "alarm_id": f"a{n}", "ne_id": ne_id, "site_id": "S", "probable_cause": cause, "severity": sev}


def script():
    yield "ne", ne("OLT", None)
    for i in range(3):
        yield "ne", ne(f"ONU{i}", "OLT")
        yield "subscriber", {"event_type": "SubscriberCreated", "subscriber_id": f"U{i}",
                             "event_time": T0 - 5000, "access_ne_id": f"ONU{i}"}
    n = 0
    for i in range(3):
        n += 1
        yield "alarm", alarm(n, f"ONU{i}", i)
    yield "alarm", alarm(99, "OLT", 20, "EQUIPMENT", "CRITICAL")
    yield "ne", ne("ONU2", None, T0)  # re-parented, then removed
    yield "ne_removed", {"ne_id": "ONU2"}
    for k in range(6):
        yield "alarm", alarm(200 + k, "ONU1", 30 + 30 * k, "PORT", "CLEARED" if k % 2 else "MINOR")
    yield "alarm", alarm(300, "OLT", 4000, "EQUIPMENT", "CLEARED")
    for k in range(5):  # an hour later: sweeps prune (deletes must reach the changelog)
        yield "alarm", alarm(400 + k, "ONU0", 8000 + 100 * k, "TEMP")


def apply(st, kind, payload):
    if kind == "alarm":
        return st.correlator.process(payload).events
    if kind == "ne":
        st.topology.apply_ne(payload)
    elif kind == "ne_removed":
        st.topology.remove_ne(payload["ne_id"])
    else:
        st.topology.apply_subscriber(payload)
    return []


def test_changelog_restore_continues_identically(agent):
    steps = list(script())
    live = agent.AlarmState()
    log = {}  # the compacted changelog: key -> latest value (None = tombstone)
    cut = len(steps) - 4
    for i, (kind, payload) in enumerate(steps[:cut]):
        apply(live, kind, payload)
        if i % 3 == 2 or i == cut - 1:  # batches of three, then "commit"
            for k, v in live.changes():
                log[k] = v
            live.dirty.clear()
    assert any(v is None for v in log.values())  # deletions are tombstones

    restored = agent.AlarmState()
    for k, v in log.items():
        restored.load(k, v)
    assert {n: m.data for n, m in restored.maps.items()} == {n: m.data for n, m in live.maps.items()}

    for kind, payload in steps[cut:]:
        assert apply(restored, kind, payload) == apply(live, kind, payload)


def test_changelog_keys_and_values_are_json(agent):
    st = agent.AlarmState()
    for kind, payload in list(script())[:12]:
        apply(st, kind, payload)
    changes = list(st.changes())
    assert changes
    for k, v in changes:
        name, key = json.loads(k)
        assert name in st.maps and isinstance(key, str)
        assert v is None or json.loads(v) == st.maps[name].data[key]
