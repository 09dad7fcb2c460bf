"""Rating through the running worker: a golden scenario with every value computed by hand,
bad input to the DLQs, and ``telbus audit rating`` against what the worker published.

The scenario is fed in phases, each waiting until the rating group has committed past
everything published so far, so each subscriber's events reach the processor in
event-time order (the condition under which the contract says audit == live).
"""
from __future__ import annotations

import json
from datetime import datetime

import fastavro
import pytest
from confluent_kafka import Producer

from telbus import codec, config, kafka
from telbus.localbroker import free_port
from tests.helpers import Proc, cli, end_offsets, produce, read_topic, unique, wait_until

pytestmark = pytest.mark.integration

GROUP = "telbus-rating"


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def sh(hhmm: str, day: str = "2026-11-20") -> int:
    return ms(f"{day}T{hhmm}:00+08:00")


def tariff(plan_id, version, effective_from, *, dom, intl, inc, free_min, sms_dom, sms_intl, free_sms,
           li_per_mb, free_mb, credit_limit_li, payment_type="PREPAID"):
    return {"event_type": "TariffPlan", "event_id": f"tp-{plan_id}-{version}", "event_time": effective_from,
            "source": "IBSS", "plan_id": plan_id, "version": version, "effective_from": effective_from,
            "payment_type": payment_type, "credit_limit_li": credit_limit_li,
            "voice": {"domestic_li_per_min": dom, "international_li_per_min": intl, "increment_s": inc,
                      "free_domestic_min": free_min},
            "sms": {"domestic_li": sms_dom, "international_li": sms_intl, "free_domestic_sms": free_sms},
            "data": {"li_per_mb": li_per_mb, "free_mb": free_mb}}


def created(sub, plan_id, t, payment_type="PREPAID"):
    return {"event_type": "SubscriberCreated", "event_id": f"sc-{sub}", "event_time": t, "source": "CRM-GD",
            "subscriber_id": sub, "msisdn": "18912345678", "account_id": f"acc-{sub}", "home_province": "GD",
            "payment_type": payment_type, "plan_id": plan_id, "real_name": "Zhang San", "id_number": "440101",
            "broadband_account": None, "broadband_type": "NONE", "access_ne_id": None}


def sub_event(event_type, sub, t, eid, **fields):
    return {"event_type": event_type, "event_id": eid, "event_time": t, "source": "CRM-GD", "subscriber_id": sub,
            **fields}


def cdr(cdr_id, sub, service, start, *, direction="MO", called="13800138000", duration=None, up=None, down=None,
        event_time=None):
    return {"event_type": "Cdr", "event_id": f"ev-{cdr_id}-{event_time or start}", "event_time": event_time or start,
            "source": "MEDIATION", "cdr_id": cdr_id, "subscriber_id": sub, "service": service,
            "direction": direction, "calling_number": "18912345678",
            "called_number": called if service != "DATA" else None, "start_time": start, "duration_s": duration,
            "bytes_up": up, "bytes_down": down, "cell_id": "C1", "province": "GD"}


def committed_past_end(topics: list[str]) -> bool:
    """True once the rating group has committed every record currently in ``topics``."""
    from confluent_kafka import TopicPartition

    c = kafka.consumer(GROUP)
    try:
        for t in topics:
            ends = end_offsets(t)
            tps = [TopicPartition(t, p) for p, end in ends.items() if end > 0]
            if not tps:
                continue
            try:
                got = {tp.partition: tp.offset for tp in c.committed(tps, timeout=5)}
            except Exception:  # offsets pending in an open transaction: not stable yet
                return False
            if any(got[p] < end for p, end in ends.items() if end > 0):
                return False
        return True
    finally:
        c.close()


def settle(*topics):
    wait_until(lambda: committed_past_end(list(topics)), 90, 0.3, f"rating committed past {topics}")


@pytest.fixture(scope="module")
def worker(broker, tmp_path_factory):
    uid = unique("rt")
    proc = Proc(f"worker-{uid}", ["worker", "--loglevel", "warning"],
                env={"TELBUS_WORKER_APP_ID": f"telbus-it-{uid}", "TELBUS_WORKER_ID": uid,
                     "TELBUS_WORKER_WEB_PORT": str(free_port())},
                log_dir=tmp_path_factory.mktemp("rating-worker"))
    (config.data_dir() / "worker").mkdir(parents=True, exist_ok=True)
    proc.start(ready_timeout=180)
    try:
        yield proc
    finally:
        proc.stop()


def rated_for(subs):
    subs = set(subs)
    return [v for _, _, k, v in read_topic("bss.cdr.rated", predicate=lambda k, v: k in subs)]


def credit_for(subs):
    subs = set(subs)
    return [v for _, _, k, v in read_topic("ocs.credit.control", predicate=lambda k, v: k in subs)]


def test_golden_scenario(worker):
    u = unique("g")
    G, H, BAD = f"G{u}", f"H{u}", f"BAD{u}"
    A, B, T, U = f"A{u}", f"B{u}", f"T{u}", f"U{u}"
    jan1 = ms("2026-01-01T00:00:00+08:00")
    nov1 = ms("2026-11-01T00:00:00+08:00")
    plans = [
        tariff(G, 1, jan1, dom=120, intl=1800, inc=6, free_min=2, sms_dom=100, sms_intl=1000, free_sms=1,
               li_per_mb=3000, free_mb=1, credit_limit_li=1000),
        tariff(G, 2, sh("12:00"), dom=60, intl=1800, inc=60, free_min=2, sms_dom=80, sms_intl=1000, free_sms=1,
               li_per_mb=2000, free_mb=1, credit_limit_li=1000),
        tariff(H, 1, jan1, dom=300, intl=3000, inc=60, free_min=0, sms_dom=150, sms_intl=1500, free_sms=0,
               li_per_mb=5000, free_mb=0, credit_limit_li=0),
        # 15 li/min with 6 s increments = 1.5 li per increment: rejected at load
        tariff(BAD, 1, jan1, dom=15, intl=1800, inc=6, free_min=0, sms_dom=1, sms_intl=1, free_sms=0,
               li_per_mb=1, free_mb=0, credit_limit_li=0),
    ]
    produce("bss.tariff.plans", plans)
    produce("bss.subscriber.events", [
        created(A, G, nov1), created(B, G, nov1), created(T, G, nov1),
        sub_event("StatusChanged", T, sh("09:00"), f"st-{T}", status="TERMINATED", reason="churn"),
        sub_event("BalanceRecharged", A, sh("08:00"), f"r1-{A}", amount_li=5000, channel="APP"),
    ])
    settle("bss.tariff.plans", "bss.subscriber.events")

    c = {}
    c[1] = cdr(f"{A}-1", A, "VOICE", sh("09:00"), duration=100)
    c[2] = cdr(f"{A}-2", A, "VOICE", sh("09:10"), duration=30)
    c[3] = cdr(f"{A}-3", A, "VOICE", sh("09:20"), duration=61, called="00442079460000")
    c[4] = cdr(f"{A}-4", A, "VOICE", sh("09:30"), duration=45, direction="MT")
    c[5] = cdr(f"{A}-5", A, "SMS", sh("09:40"))
    c[6] = cdr(f"{A}-6", A, "SMS", sh("09:41"))
    c[7] = cdr(f"{A}-7", A, "SMS", sh("09:42"), called="0085212345678")
    c[8] = cdr(f"{A}-8", A, "SMS", sh("09:43"), direction="MT")
    c[9] = cdr(f"{A}-9", A, "DATA", sh("10:00"), up=524288, down=1048576)
    c[10] = cdr(f"{A}-10", A, "VOICE", sh("12:30"), duration=120)
    c[11] = cdr(f"{A}-11", A, "DATA", sh("13:00"), up=1024, down=1)
    unknown = cdr(f"{U}-1", U, "VOICE", sh("10:00"), duration=60)
    terminated = cdr(f"{T}-1", T, "VOICE", sh("10:00"), duration=60)
    produce("net.cdr.raw", [c[i] for i in range(1, 12)] + [unknown, terminated])
    settle("net.cdr.raw")

    produce("bss.subscriber.events", [sub_event("PlanChanged", A, sh("14:00"), f"pc-{A}", plan_id=H)])
    settle("bss.subscriber.events")
    c[12] = cdr(f"{A}-12", A, "VOICE", sh("15:00"), duration=61)
    c[13] = cdr(f"{A}-13", A, "VOICE", sh("13:30"), duration=10, event_time=sh("15:30"))   # late, before the change
    c[14] = cdr(f"{A}-6", A, "SMS", sh("09:41"), event_time=sh("15:40"))                  # duplicate of c6
    produce("net.cdr.raw", [c[12], c[13], c[14]])
    settle("net.cdr.raw")
    produce("bss.subscriber.events", [sub_event("BalanceRecharged", A, sh("16:00"), f"r2-{A}", amount_li=1000,
                                                channel="OUTLET")])
    settle("bss.subscriber.events")
    c[15] = cdr(f"{A}-15", A, "SMS", sh("17:00"))
    b1 = cdr(f"{B}-1", B, "VOICE", ms("2026-11-30T15:59:00+00:00"), duration=120)   # 23:59 Nov 30 Shanghai
    b2 = cdr(f"{B}-2", B, "VOICE", ms("2026-11-30T16:00:00+00:00"), duration=60)    # 00:00 Dec 1 Shanghai
    b3 = cdr(f"{B}-3", B, "VOICE", ms("2026-11-30T15:59:30+00:00"), duration=60,
             event_time=ms("2026-11-30T16:01:00+00:00"))                             # November again
    produce("net.cdr.raw", [c[15], b1, b2, b3])
    settle("net.cdr.raw")

    rated = rated_for([A, B, T, U])
    got = [(r["cdr_id"], r["status"], r["reject_reason"], r["zone"], r["billed_units"], r["free_units"],
            r["amount_li"], r["plan_id"], r["plan_version"], r["billing_period"], r["balance_after_li"])
           for r in rated]
    N, I = "DOMESTIC", "INTERNATIONAL"
    expected = [
        # G v1: 6 s increments, 120 li/min domestic, 2 free minutes (120 s)
        (c[1]["cdr_id"], "RATED", None, N, 102, 102, 0, G, 1, "202611", 5000),     # 17 x 6 s, all free; 18 s left
        (c[2]["cdr_id"], "RATED", None, N, 30, 18, 24, G, 1, "202611", 4976),      # 3 incs free, 12 s x 120/60
        (c[3]["cdr_id"], "RATED", None, I, 66, 0, 1980, G, 1, "202611", 2996),     # 66 s x 1800/60
        (c[4]["cdr_id"], "RATED", None, N, 48, 0, 0, G, 1, "202611", 2996),        # MT: free of charge
        (c[5]["cdr_id"], "RATED", None, N, 1, 1, 0, G, 1, "202611", 2996),         # the free SMS
        (c[6]["cdr_id"], "RATED", None, N, 1, 0, 100, G, 1, "202611", 2896),
        (c[7]["cdr_id"], "RATED", None, I, 1, 0, 1000, G, 1, "202611", 1896),
        (c[8]["cdr_id"], "RATED", None, N, 1, 0, 0, G, 1, "202611", 1896),         # MT SMS
        (c[9]["cdr_id"], "RATED", None, N, 1536, 1024, 1500, G, 1, "202611", 396),  # 512 KB x 3000/1024
        # G v2 from 12:00: 60 s increments, 60 li/min, free minutes already used up
        (c[10]["cdr_id"], "RATED", None, N, 120, 0, 120, G, 2, "202611", 276),
        (c[11]["cdr_id"], "RATED", None, N, 2, 0, 4, G, 2, "202611", 272),          # ceil(2 x 2000/1024)
        (unknown["cdr_id"], "REJECTED", "UNKNOWN_SUBSCRIBER", N, 0, 0, 0, None, None, "202611", 0),
        (terminated["cdr_id"], "REJECTED", "SUBSCRIBER_TERMINATED", N, 0, 0, 0, G, 1, "202611", 0),
        # plan H from 14:00: 300 li/min, 60 s increments, credit limit 0
        (c[12]["cdr_id"], "RATED", None, N, 120, 0, 600, H, 1, "202611", -328),
        (c[13]["cdr_id"], "RATED", None, N, 60, 0, 60, G, 2, "202611", -388),      # late: plan in effect at 13:30
        (c[6]["cdr_id"], "DUPLICATE", None, N, 0, 0, 0, G, 1, "202611", -388),
        (c[15]["cdr_id"], "RATED", None, N, 1, 0, 150, H, 1, "202611", 462),       # after +1000
        (b1["cdr_id"], "RATED", None, N, 120, 120, 0, G, 2, "202611", 0),
        (b2["cdr_id"], "RATED", None, N, 60, 60, 0, G, 2, "202612", 0),            # new period, new allowance
        (b3["cdr_id"], "RATED", None, N, 60, 0, 60, G, 2, "202611", -60),          # November's minutes are gone
    ]
    key = lambda row: (row[0], row[1])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)
    a_rows = [g for g in got if g[0].startswith(A)]
    assert a_rows == [e for e in expected if e[0].startswith(A)], "A's CDRs in processing order"
    assert all(r["rated_at"] == next(x for x in c.values() if x["cdr_id"] == r["cdr_id"])["start_time"]
               for r in rated if r["subscriber_id"] == A)

    cc = credit_for([A, B, T, U])
    assert [(x["subscriber_id"], x["action"], x["balance_li"], x["threshold_li"], x["cause_event_id"]) for x in cc] == [
        (A, "SUSPEND", -328, 0, c[12]["event_id"]),
        (A, "RESUME", 612, 0, f"r2-{A}"),
    ]

    dlq = read_topic("bss.tariff.plans.dlq", decode=False, predicate=lambda k, v: k == f"{BAD}@1")
    assert len(dlq) == 1

    # the audit re-rates from the log and agrees with what the worker published
    res = cli("audit", "rating", "--subscriber", A, "--period", "202611")
    assert res.returncode == 0, res.stdout + res.stderr
    res = cli("audit", "rating", "--subscriber", B, "--period", "202612", "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["agree"] is True and report["rerated"] == 1


def dead_letters(topic: str, key: str) -> list[dict]:
    """Headers (decoded) of the rating processor's dead letters with ``key`` on ``topic``."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    ends = {p: e for p, e in end_offsets(topic).items() if e > 0}
    c = kafka.consumer(None, **{"enable.partition.eof": True})
    out = []
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        done = set()
        while len(done) < len(ends):
            m = c.poll(5)
            assert m is not None, "timed out reading " + topic
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    done.add(m.partition())
                continue
            h = {k: v.decode() for k, v in (m.headers() or [])}
            if m.key() == key.encode() and h.get("telbus.stage", "").startswith("rating."):
                out.append(h)
    finally:
        c.close()
    return out


def _bad_enum_cdr(sub: str) -> bytes:
    """A Cdr whose service enum index is out of range (an unknown symbol to our schema)."""
    sv = codec.default_codec().catalog.current("Cdr")
    raw = json.load(open(config.schemas_dir() / "Cdr.avsc"))
    for f in raw["fields"]:
        if f["name"] == "service":
            f["type"]["symbols"].append("FAX")
    import io

    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + sv.wire_fingerprint)
    ev = cdr(f"{sub}-fax", sub, "VOICE", sh("10:00"), duration=1)
    ev["service"] = "FAX"
    ev.pop("event_type")
    fastavro.schemaless_writer(buf, fastavro.parse_schema(raw), ev)
    return buf.getvalue()


def test_bad_input_goes_to_dlq_and_the_stream_goes_on(worker):
    u = unique("bad")
    P, S = f"P{u}", f"S{u}"
    jan1 = ms("2026-01-01T00:00:00+08:00")
    produce("bss.tariff.plans", [tariff(P, 1, jan1, dom=60, intl=600, inc=60, free_min=0, sms_dom=10, sms_intl=10,
                                        free_sms=0, li_per_mb=10, free_mb=0, credit_limit_li=100000)])
    produce("bss.subscriber.events", [created(S, P, jan1)])
    settle("bss.tariff.plans", "bss.subscriber.events")
    p = kafka.producer()  # same partitioner as the telbus producers: same key, same partition
    p.produce("net.cdr.raw", b"\x00garbage", S.encode())
    p.produce("net.cdr.raw", b"not avro at all", S.encode())
    p.produce("net.cdr.raw", _bad_enum_cdr(S), S.encode())
    p.produce("bss.subscriber.events", b"\xc3\x01\x00\x00", S.encode())
    assert p.flush(30) == 0
    negative = cdr(f"{S}-neg", S, "VOICE", sh("10:00"), duration=-5)
    nobytes = cdr(f"{S}-nob", S, "DATA", sh("10:01"), up=None, down=100)
    good = cdr(f"{S}-ok", S, "VOICE", sh("10:02"), duration=60)
    produce("net.cdr.raw", [negative, nobytes, good])
    settle("net.cdr.raw", "bss.subscriber.events")

    dl = dead_letters("net.cdr.raw.dlq", S)
    assert len(dl) == 5, dl
    errors = [h["telbus.error"] for h in dl]
    assert "schema registry" in errors[0]          # \x00 = Confluent framing, no registry here
    assert "unknown framing" in errors[1]
    assert "corrupt Avro body" in errors[2]         # enum index beyond the known symbols
    assert "negative duration_s -5" in errors[3]
    assert "DATA CDR without bytes_up" in errors[4]
    assert all(h["telbus.original.topic"] == "net.cdr.raw" for h in dl)
    assert [h["telbus.stage"] for h in dl] == ["rating.decode"] * 3 + ["rating.validate"] * 2
    assert len(dead_letters("bss.subscriber.events.dlq", S)) == 1
    rated = rated_for([S])
    assert [(r["cdr_id"], r["amount_li"]) for r in rated] == [(good["cdr_id"], 60)]
