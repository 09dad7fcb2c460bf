"""Deterministic demo workload generator.

``generate()`` builds a realistic day (by default) of traffic for a provincial-scale
slice of the operator: tariff plans, network topology, subscribers, then a time-ordered
mix of subscriber lifecycle events, orders and their work orders, CDRs, alarms (with
alarm storms and a flapping link) and client logins. With ``fraud=True`` it also injects
one occurrence of every fraud pattern of CONTRACT §4; the background (and the whole
workload with ``fraud=False``) stays well below every fraud threshold.

``cdr_stream()`` yields many background CDRs quickly for benchmarks; every subscriber it
uses exists in ``reference_events()`` (and in ``generate()``) for the same seed, subscriber
count and base time, so rating succeeds.

Everything is a pure function of the arguments: ``random.Random`` instances seeded from
the seed and a section name (so sections are independent: the fraud injection adds
events but never changes the background), and no wall clock. Events are plain dicts as
in docs/CONVENTIONS.md (``event_type`` + fields, timestamps int epoch ms UTC, money int li).
"""
from __future__ import annotations

import bisect
import copy
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Iterator

__all__ = [
    "DEFAULT_BASE_TIME_MS", "HIGH_RISK_PREFIXES", "TOPICS", "Workload",
    "generate", "reference_events", "cdr_stream",
]

CST = timezone(timedelta(hours=8))
SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
DEFAULT_BASE_TIME_MS = int(datetime(2026, 11, 20, tzinfo=CST).timestamp()) * 1000

T_SUB = "bss.subscriber.events"
T_ORDER = "bss.order.events"
T_PLAN = "bss.tariff.plans"
T_CDR = "net.cdr.raw"
T_TOPO = "oss.topology"
T_ALARM = "oss.alarm.raw"
T_LOGIN = "sec.login.events"
TOPICS = (T_PLAN, T_TOPO, T_SUB, T_ORDER, T_CDR, T_ALARM, T_LOGIN)

# Tie order inside one millisecond follows the audit's: plans, subscriber events, CDRs.
_PRIO = {T_PLAN: 0, T_TOPO: 0, T_SUB: 1, T_CDR: 2, T_ORDER: 3, T_ALARM: 3, T_LOGIN: 3}

HIGH_RISK_PREFIXES = ("00881", "00882", "00883", "00870", "00979", "00808")

# --------------------------------------------------------------------------- static data

# province -> cities (city code, area code, ID-card region code); IP prefixes; NMS vendor
_PROVINCES = {
    "GD": ([("GZ", "020", "440106"), ("SZ", "0755", "440305"), ("DG", "0769", "441900")],
           ("113.96", "14.127", "183.37"), "HW"),
    "SH": ([("SH", "021", "310115")], ("101.88", "180.160"), "HW"),
    "BJ": ([("BJ", "010", "110105")], ("106.39", "219.142"), "ZTE"),
    "JS": ([("NJ", "025", "320106"), ("SU", "0512", "320508")], ("180.108", "49.77"), "ZTE"),
    "ZJ": ([("HZ", "0571", "330106"), ("NB", "0574", "330203")], ("115.192", "122.235"), "HW"),
    "SC": ([("CD", "028", "510107")], ("171.213", "118.113"), "ZTE"),
    "HB": ([("WH", "027", "420106")], ("59.172", "27.18"), "HW"),
    "FJ": ([("FZ", "0591", "350102"), ("XM", "0592", "350203")], ("27.154", "117.28"), "ZTE"),
}
_PROV_WEIGHTS = {"GD": 30, "SH": 12, "BJ": 10, "JS": 14, "ZJ": 13, "SC": 9, "HB": 6, "FJ": 6}
_PROV_CODES = tuple(_PROVINCES)

_CT_PREFIXES = ("133", "153", "173", "177", "180", "181", "189", "199")
_OTHER_MOBILE_PREFIXES = ("134", "135", "136", "137", "138", "139", "150", "158", "182", "187",
                          "130", "131", "132", "155", "156", "186", "166", "191", "193")
# Ordinary destinations (none of them high-risk): US/CA, UK, JP, KR, HK, MO, TW, SG, AU,
# DE, FR, TH, MY, VN, RU.
_INTL_CC = ("1", "44", "81", "82", "852", "853", "886", "65", "61", "49", "33", "66", "60",
            "84", "7")

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董"
_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "洋", "艳", "勇", "军", "杰", "娟",
          "涛", "明", "超", "秀英", "华", "平", "刚", "桂英", "建华", "志强", "晓东", "婷",
          "雪", "浩", "宇", "欣", "子涵", "梓轩", "一诺", "俊杰", "文博", "海燕", "丽娟")

# plan_id -> payment, credit_limit_li, voice(dom, intl, increment_s, free_min),
#            sms(dom, intl, free), data(li_per_mb, free_mb)
_PLANS = {
    "TY-PRE-19": ("PREPAID", 0, (190, 2990, 6, 0), (100, 1000, 0), (5, 5120)),
    "TY-PRE-8": ("PREPAID", 0, (100, 3600, 60, 0), (100, 1000, 0), (10, 1024)),
    "TY-POST-59": ("POSTPAID", 100_000, (150, 2400, 60, 300), (100, 1000, 100), (5, 30720)),
    "TY-POST-129": ("POSTPAID", 300_000, (150, 1800, 60, 1000), (100, 1000, 300), (3, 81920)),
    "E8-FUSION-199": ("POSTPAID", 500_000, (100, 1800, 6, 2000), (100, 1000, 500), (3, 102400)),
}
# The mid-window second version: cheaper minutes and more data for TY-POST-59.
_PLAN_V2 = {"TY-POST-59": ("POSTPAID", 100_000, (120, 2000, 60, 500), (100, 1000, 100), (5, 40960))}
_PLANS_BY_PAYMENT = {
    "PREPAID": ("TY-PRE-19", "TY-PRE-8"),
    "POSTPAID": ("TY-POST-59", "TY-POST-129", "E8-FUSION-199"),
}

# product_id -> (product_type, target systems, needs broadband)
_PRODUCTS = {
    "VAS-CRBT": ("VAS", ("ISMP",), False),
    "VAS-CLIP": ("VAS", ("SOFTSWITCH",), False),
    "VAS-MCA": ("VAS", ("ISMP",), False),
    "VAS-SMS-100": ("VAS", ("SMSC",), False),
    "VAS-189MAIL": ("VAS", ("ISMP",), False),
    "VAS-BILL-REMINDER": ("VAS", (), False),
    "BROADBAND-300M": ("BROADBAND", ("AAA", "BAC"), True),
    "BROADBAND-500M": ("BROADBAND", ("AAA", "BAC"), True),
    "BROADBAND-1000M": ("BROADBAND", ("AAA", "BAC"), True),
    "EHOME-VOIP-FIXED": ("EHOME_VOIP", ("SOFTSWITCH", "EHOME"), True),
    "EHOME-VOIP-VIDEO": ("EHOME_VOIP", ("SOFTSWITCH", "EHOME"), True),
    "SECURITY-GREEN-NET": ("SECURITY", ("VNET",), True),
    "SECURITY-ANTI-FRAUD": ("SECURITY", (), False),
    "SECURITY-HOME-GUARD": ("SECURITY", ("EHOME", "VNET"), True),
    "CONTENT-IPTV-BASIC": ("CONTENT", ("EHOME",), True),
    "CONTENT-IPTV-4K": ("CONTENT", ("EHOME",), True),
    "CONTENT-TIANYI-VIDEO": ("CONTENT", ("VNET", "ISMP"), False),
    "CONTENT-MUSIC": ("CONTENT", ("ISMP",), False),
    "CONTENT-CLOUD-GAME": ("CONTENT", ("VNET",), True),
}
_WO_ERRORS = {
    "AAA": "AAA-1003 account already bound to another line",
    "BAC": "BAC-TIMEOUT no response from access controller in 30s",
    "SOFTSWITCH": "SS-217 number not in provisioned range",
    "ISMP": "ISMP-4012 product mutually exclusive with an existing order",
    "VNET": "VNET-500 internal error",
    "EHOME": "EHOME-E21 home gateway offline",
    "SMSC": "SMSC-408 quota service unavailable",
}

# Local-hour traffic weights (Asia/Shanghai), quiet at night, peaks late morning and evening.
_HOUR_WEIGHTS = (3, 2, 1, 1, 1, 2, 4, 7, 10, 12, 13, 13, 11, 10, 11, 11, 11, 11, 12, 14, 15,
                 14, 10, 6)

_NOISE_CAUSES = {
    "ONU": (("ONU_DYING_GASP", "MINOR"), ("OPTICAL_POWER_LOW", "WARNING")),
    "OLT": (("HIGH_TEMPERATURE", "MINOR"), ("FAN_FAILURE", "MAJOR"), ("BOARD_CPU_HIGH", "WARNING")),
    "BRAS": (("ADDRESS_POOL_HIGH_USAGE", "WARNING"), ("CPU_OVERLOAD", "MINOR")),
    "ROUTER": (("OPTICAL_MODULE_DEGRADED", "MINOR"), ("HIGH_TEMPERATURE", "WARNING")),
    "BTS": (("VSWR_HIGH", "MINOR"), ("CELL_CAPACITY_HIGH", "WARNING"), ("GPS_SYNC_LOSS", "MAJOR")),
    "SOFTSWITCH": (("CALL_LOSS_RATE_HIGH", "MINOR"),),
    "SMSC": (("QUEUE_BACKLOG", "WARNING"),),
    "AAA": (("RADIUS_TIMEOUT_RATE_HIGH", "MINOR"),),
}


# --------------------------------------------------------------------------- helpers

def _ev(event_type: str, event_id: str, t: int, source: str, **fields) -> dict:
    ev = {"event_type": event_type, "event_id": event_id, "event_time": int(t), "source": source}
    ev.update(fields)
    return ev


class _Ids:
    """Deterministic, unique ids: ``<TAG>-<seed>-<ns><seq>`` per tag."""

    def __init__(self, seed: int, ns: str = ""):
        self.seed, self.ns, self.n = seed, ns, Counter()

    def __call__(self, tag: str) -> str:
        self.n[tag] += 1
        return f"{tag}-{self.seed}-{self.ns}{self.n[tag]:07d}"


def _time_sampler(rng: random.Random, base: int, window: int):
    """Diurnally weighted times in [base, base + window)."""
    hours = max(1, -(-window // HOUR))
    first_local_hour = ((base + 8 * HOUR) // HOUR) % 24
    cum, acc = [], 0
    for h in range(hours):
        acc += _HOUR_WEIGHTS[(first_local_hour + h) % 24]
        cum.append(acc)
    total = cum[-1]
    rnd = rng.random

    def sample(lo: int = base, hi: int = base + window) -> int:
        for _ in range(50):
            h = bisect.bisect_right(cum, rnd() * total)
            t = base + h * HOUR + int(rnd() * HOUR)
            if lo <= t < hi and t < base + window:
                return t
        return lo + int(rnd() * max(1, hi - lo))
    return sample


def _id_number(rng: random.Random, region: str) -> str:
    """A structurally valid (checksummed) 18-digit resident ID number. Fake, never real."""
    born = date(1955, 1, 1) + timedelta(days=rng.randrange(50 * 365))
    body = f"{region}{born:%Y%m%d}{rng.randrange(1000):03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, weights)) % 11]
    return body + check


def _ip(rng: random.Random, prov: str) -> str:
    prefix = rng.choice(_PROVINCES[prov][1])
    return f"{prefix}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"


def _plan_event(pid: str, version: int, spec, t: int, effective_from: int, seed: int) -> dict:
    pay, credit, voice, sms, data = spec
    return _ev("TariffPlan", f"PLN-{seed}-{pid}-v{version}", t, "IBSS",
               plan_id=pid, version=version, effective_from=int(effective_from),
               payment_type=pay, credit_limit_li=credit,
               voice={"domestic_li_per_min": voice[0], "international_li_per_min": voice[1],
                      "increment_s": voice[2], "free_domestic_min": voice[3]},
               sms={"domestic_li": sms[0], "international_li": sms[1], "free_domestic_sms": sms[2]},
               data={"li_per_mb": data[0], "free_mb": data[1]})


# --------------------------------------------------------------------------- reference data

@dataclass(frozen=True)
class _Site:
    site_id: str
    prov: str
    city: str
    vendor: str
    router: str
    bras: str
    olts: tuple
    onus: dict          # olt -> tuple of onu ids
    bts: tuple
    cells: tuple        # ECGI strings served by this site's BTS
    core: tuple


@dataclass(frozen=True)
class _Sub:
    sid: str
    msisdn: str
    account_id: str
    prov: str
    city: str
    site_id: str
    payment: str
    plan_id: str
    real_name: str
    id_number: str
    bb_account: str | None
    bb_type: str
    access_ne: str | None
    created: int
    home_ip: str
    device: str
    cells: tuple
    weight: int
    terminated: int | None = None
    new: bool = False

    def alive(self, t: int) -> bool:
        return self.created <= t and (self.terminated is None or t < self.terminated)


@dataclass
class _Ref:
    seed: int
    base: int
    window: int
    plans: list
    topology: list
    sites: list
    ne: dict            # ne_id -> NetworkElement event
    subs: list          # background subscribers (old and new-in-window)
    subscriber_events: list   # reference part: SubscriberCreated + opening top-ups (old subs)
    msisdns: frozenset
    cells_by_prov: dict


def _build_topology(seed: int, base: int):
    rng = random.Random(f"{seed}/topology")
    t0 = base - 2 * DAY
    sites, events, ne = [], [], {}
    site_no = 0

    def add(ne_id, ne_type, parent, site, services, vendor):
        ev = _ev("NetworkElement", f"NE-{seed}-{ne_id}", t0 + len(events) * SEC, f"NMS-{vendor}",
                 ne_id=ne_id, ne_type=ne_type, parent_ne_id=parent, site_id=site,
                 services=list(services))
        events.append(ev)
        ne[ne_id] = ev

    for prov, (cities, _ips, vendor) in _PROVINCES.items():
        for ci, (city, _area, _region) in enumerate(cities):
            site_no += 1
            site = f"{prov}-{city}-01"
            router = f"{site}-CR01"
            bras = f"{site}-BRAS01"
            add(router, "ROUTER", None, site, ("BROADBAND", "VOICE", "IPTV", "SMS", "MOBILE_DATA"), vendor)
            add(bras, "BRAS", router, site, ("BROADBAND", "IPTV"), vendor)
            core = ()
            if ci == 0:  # provincial core site: voice, SMS and authentication platforms
                core = (f"{site}-SS01", f"{site}-SMSC01", f"{site}-AAA01")
                add(core[0], "SOFTSWITCH", router, site, ("VOICE",), vendor)
                add(core[1], "SMSC", router, site, ("SMS",), vendor)
                add(core[2], "AAA", router, site, ("BROADBAND",), vendor)
            olts, onus = [], {}
            for k in range(1, 3):
                olt = f"{site}-OLT{k:02d}"
                olts.append(olt)
                add(olt, "OLT", bras, site, ("BROADBAND", "VOICE", "IPTV"), vendor)
                ids = tuple(f"{olt}-ONU{j:03d}" for j in range(1, rng.randint(6, 10) + 1))
                onus[olt] = ids
                for onu in ids:
                    add(onu, "ONU", olt, site, ("BROADBAND", "VOICE", "IPTV"), vendor)
            bts, cells = [], []
            for k in range(1, 3):
                b = f"{site}-BTS{k:02d}"
                bts.append(b)
                add(b, "BTS", router, site, ("VOICE", "SMS", "MOBILE_DATA"), vendor)
                enb = 100000 + site_no * 100 + k
                cells.extend(f"460-11-{enb}-{c}" for c in (1, 2, 3))
            sites.append(_Site(site, prov, city, vendor, router, bras, tuple(olts), onus,
                               tuple(bts), tuple(cells), core))
    return sites, events, ne


@lru_cache(maxsize=8)
def _reference(seed: int, subscribers: int, base: int, window: int) -> _Ref:
    sites, topo_events, ne = _build_topology(seed, base)
    plan_events = []
    for i, (pid, spec) in enumerate(_PLANS.items()):
        plan_events.append(_plan_event(pid, 1, spec, base - 30 * DAY + i * MIN,
                                       base - 730 * DAY, seed))
    for i, (pid, spec) in enumerate(_PLAN_V2.items()):
        plan_events.append(_plan_event(pid, 2, spec, base - 3 * DAY + i * MIN,
                                       base + window // 2, seed))

    rng = random.Random(f"{seed}/subscribers")
    sites_by_city = {(s.prov, s.city): s for s in sites}
    cells_by_prov: dict[str, list] = {}
    for s in sites:
        cells_by_prov.setdefault(s.prov, []).extend(s.cells)
    prov_list = list(_PROV_WEIGHTS)
    prov_cum = []
    acc = 0
    for p in prov_list:
        acc += _PROV_WEIGHTS[p]
        prov_cum.append(acc)

    n_new = round(subscribers * 0.02) if subscribers >= 20 else 0
    n_term = max(1, round(subscribers * 0.01)) if subscribers >= 50 else 0
    new_idx = set(rng.sample(range(subscribers), n_new))
    term_idx = set(rng.sample(sorted(set(range(subscribers)) - new_idx), n_term))
    in_window = _time_sampler(rng, base, window)

    used_msisdn, used_bb, subs = set(), set(), []
    for i in range(subscribers):
        prov = prov_list[bisect.bisect_right(prov_cum, rng.random() * acc)]
        city, area, region = rng.choice(_PROVINCES[prov][0])
        site = sites_by_city[(prov, city)]
        while True:
            msisdn = rng.choice(_CT_PREFIXES) + f"{rng.randrange(10**8):08d}"
            if msisdn not in used_msisdn:
                used_msisdn.add(msisdn)
                break
        bb_type = rng.choices(("E8_1", "E8_2", "E6", "NONE"), (40, 35, 10, 15))[0]
        if bb_type == "NONE":
            bb_account, access = None, rng.choice(site.bts)
        else:
            while True:
                bb_account = f"{area}{rng.randrange(10**8):08d}@{prov.lower()}"
                if bb_account not in used_bb:
                    used_bb.add(bb_account)
                    break
            olt = rng.choice(site.olts)
            access = rng.choice(site.onus[olt])
        payment = "PREPAID" if rng.random() < 0.35 else "POSTPAID"
        plans = _PLANS_BY_PAYMENT[payment]
        if bb_type == "NONE":
            plans = tuple(p for p in plans if not p.startswith("E8"))
        plan = rng.choice(plans)
        is_new = i in new_idx
        created = in_window(base, base + window * 3 // 4) if is_new else \
            base - rng.randrange(30 * DAY, 700 * DAY) + rng.randrange(DAY)
        terminated = in_window(base + window // 4, base + window) if i in term_idx else None
        name = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
        subs.append(_Sub(
            sid=f"SUB{i + 1:08d}", msisdn=msisdn, account_id=f"ACC{rng.randrange(10**10):010d}",
            prov=prov, city=city, site_id=site.site_id, payment=payment, plan_id=plan,
            real_name=name, id_number=_id_number(rng, region), bb_account=bb_account,
            bb_type=bb_type, access_ne=access, created=created, home_ip=_ip(rng, prov),
            device=f"{rng.getrandbits(64):016x}", cells=tuple(rng.sample(site.cells, 3)),
            weight=1 if is_new else rng.choices((1, 2, 4), (70, 25, 5))[0],
            terminated=terminated, new=is_new))

    sub_events = []
    ids = _Ids(seed)
    for s in sorted((s for s in subs if not s.new), key=lambda s: (s.created, s.sid)):
        sub_events.extend(_creation_events(s, ids, random.Random(f"{seed}/open/{s.sid}")))
    return _Ref(seed, base, window, plan_events, topo_events, sites, ne, subs, sub_events,
                frozenset(used_msisdn), {p: tuple(c) for p, c in cells_by_prov.items()})


def _created_event(s: _Sub, event_id: str) -> dict:
    return _ev("SubscriberCreated", event_id, s.created, f"CRM-{s.prov}",
               subscriber_id=s.sid, msisdn=s.msisdn, account_id=s.account_id,
               home_province=s.prov, payment_type=s.payment, plan_id=s.plan_id,
               real_name=s.real_name, id_number=s.id_number, broadband_account=s.bb_account,
               broadband_type=s.bb_type, access_ne_id=s.access_ne)


def _creation_events(s: _Sub, ids: _Ids, rng: random.Random) -> list:
    """SubscriberCreated, plus the opening top-up of a prepaid line."""
    out = [_created_event(s, ids("SUB"))]
    if s.payment == "PREPAID":
        out.append(_ev("BalanceRecharged", ids("RCG"), s.created + rng.randrange(1, 10) * MIN,
                       f"CRM-{s.prov}", subscriber_id=s.sid,
                       amount_li=rng.choice((50_000, 100_000, 100_000, 200_000, 300_000)),
                       channel="OUTLET"))
    return out


# --------------------------------------------------------------------------- CDR core

@lru_cache(maxsize=8)
def _number_pools(seed: int):
    rng = random.Random(f"{seed}/numbers")
    dom = []
    areas = [a for cities, _i, _v in _PROVINCES.values() for _c, a, _r in cities]
    for _ in range(4096):
        if rng.random() < 0.8:
            dom.append(rng.choice(_CT_PREFIXES + _OTHER_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}")
        else:
            a = rng.choice(areas)
            dom.append(a + f"{rng.randrange(2 * 10**(11 - len(a) - 1), 10**(11 - len(a)))}")
    intl = []
    for _ in range(512):
        cc = rng.choice(_INTL_CC)
        intl.append(f"00{cc}{rng.randrange(10**7, 10**9)}")
    assert not any(n.startswith(HIGH_RISK_PREFIXES) or n.startswith("0086") for n in intl)
    return tuple(dom), tuple(intl)


def _cdr(rnd, sub: _Sub, t: int, cdr_id: str, event_id: str, dom, intl, allow_intl: bool,
         roam_cells) -> dict:
    """One background CDR for ``sub`` starting at ``t``. ``rnd`` is a bound ``random``."""
    r = rnd()
    if roam_cells is not None and r < 0.02:
        prov = roam_cells[0]
        cells = roam_cells[1]
        cell = cells[int(rnd() * len(cells))]
    else:
        prov = sub.prov
        cell = sub.cells[int(r * 150) % 3]
    r = rnd()
    if r < 0.45:
        service = "VOICE"
        direction = "MO" if rnd() < 0.55 else "MT"
        if allow_intl and rnd() < 0.05:
            other = intl[int(rnd() * len(intl))]
        else:
            other = dom[int(rnd() * len(dom))]
        d = rnd()
        if d < 0.03:
            duration = 0
        elif d < 0.5:
            duration = 10 + int(rnd() * 80)
        elif d < 0.85:
            duration = 90 + int(rnd() * 210)
        elif d < 0.97:
            duration = 300 + int(rnd() * 900)
        else:
            duration = 1200 + int(rnd() * 2400)
        up = down = None
    elif r < 0.65:
        service = "SMS"
        direction = "MO" if rnd() < 0.5 else "MT"
        if allow_intl and rnd() < 0.05:
            other = intl[int(rnd() * len(intl))]
        else:
            other = dom[int(rnd() * len(dom))]
        duration = up = down = None
    else:
        service, direction, other, duration = "DATA", "MO", None, None
        d = rnd()
        if d < 0.6:
            down = 50_000 + int(rnd() * 5_000_000)
        elif d < 0.9:
            down = 5_000_000 + int(rnd() * 45_000_000)
        elif d < 0.99:
            down = 50_000_000 + int(rnd() * 450_000_000)
        else:
            down = 500_000_000 + int(rnd() * 1_500_000_000)
        up = down * (3 + int(rnd() * 12)) // 100
    if direction == "MO":
        calling, called = sub.msisdn, other
    else:
        calling, called = other, sub.msisdn
    return {"event_type": "Cdr", "event_id": event_id, "event_time": t, "source": "MEDIATION",
            "cdr_id": cdr_id, "subscriber_id": sub.sid, "service": service,
            "direction": direction, "calling_number": calling, "called_number": called,
            "start_time": t, "duration_s": duration, "bytes_up": up, "bytes_down": down,
            "cell_id": cell, "province": prov}


# --------------------------------------------------------------------------- workload

@dataclass
class Workload:
    events: list                         # [(topic, key, event_dict)] in publication order
    manifest: dict = field(default_factory=dict)

    def __iter__(self):
        return iter(self.events)

    def __len__(self):
        return len(self.events)

    def by_topic(self, topic: str) -> list:
        return [(k, e) for tp, k, e in self.events if tp == topic]


def _key(topic: str, ev: dict) -> str:
    if topic == T_PLAN:
        return f"{ev['plan_id']}@{ev['version']}"
    if topic == T_TOPO:
        return ev["ne_id"]
    if topic == T_ALARM:
        return ev["site_id"]
    if topic == T_LOGIN:
        return ev["account"]
    return ev["subscriber_id"]


class _Mix:
    """Collects time-ordered events; ties keep the audit's topic order, then insertion."""

    def __init__(self):
        self.items = []

    def add(self, topic: str, ev: dict, key: str | None = None):
        self.items.append((ev["event_time"], _PRIO[topic], len(self.items), topic,
                           key if key is not None else _key(topic, ev), ev))

    def sorted(self):
        return [(tp, k, ev) for _t, _p, _n, tp, k, ev in sorted(self.items, key=lambda x: x[:3])]


def _parse_base(base_time_ms) -> int:
    if isinstance(base_time_ms, str):
        return int(datetime.fromisoformat(base_time_ms.replace("Z", "+00:00")).timestamp() * 1000)
    return int(base_time_ms)


def reference_events(seed: int = 7, subscribers: int = 200, *,
                     base_time_ms: int | str = DEFAULT_BASE_TIME_MS, hours: int = 24) -> list:
    """The reference prefix of ``generate(..., fraud=False)``: plans, topology, subscribers
    created before the window (with opening top-ups). Enough to rate ``cdr_stream()``."""
    ref = _reference(seed, subscribers, _parse_base(base_time_ms), hours * HOUR)
    # Copies: the cached reference must not be changed by whoever consumes the events.
    return ([(T_PLAN, _key(T_PLAN, e), copy.deepcopy(e)) for e in ref.plans]
            + [(T_TOPO, e["ne_id"], copy.deepcopy(e)) for e in ref.topology]
            + [(T_SUB, e["subscriber_id"], dict(e)) for e in ref.subscriber_events])


def generate(seed: int = 7, subscribers: int = 200, cdrs: int = 5000, fraud: bool = True,
             storms: int = 2, *, base_time_ms: int | str = DEFAULT_BASE_TIME_MS,
             hours: int = 24, orders: int | None = None, flaps: int = 1) -> Workload:
    """A deterministic demo workload of ``hours`` hours starting at ``base_time_ms``.

    ``cdrs`` background CDRs (the fraud patterns add their own), ``orders`` orders
    (default subscribers // 4), ``storms`` OLT-failure alarm storms and ``flaps`` flapping
    links. ``fraud=False`` gives the same workload without the injected fraud: the
    background is generated identically either way.

    ``manifest`` (JSON-serialisable):
      counts (per topic), event_types, plans (``plan_id@version``), new_subscribers,
      terminated_subscribers, orders (orders, without_work_orders, work_orders,
      failed_work_orders, completed_orders, failed_orders),
      storms: [{kind OLT_FAILURE, root_ne_id, site_id, root_alarm_id, start_ms,
      root_raised_ms, cleared_ms, symptom_ne_ids, symptom_alarm_ids, affected_subscribers}],
      flapping: [{kind LINK_FLAPPING, ne_id, site_id, probable_cause, transitions, start_ms}],
      fraud: {rule: {subject_type, subjects, alerts (expected with the default thresholds
      and 10-minute suppression), event_ids, window [first, last event time],
      reference_event_ids (IRSF/SIMBOX: creation of the dedicated line)}}.
    """
    base = _parse_base(base_time_ms)
    window = hours * HOUR
    ref = _reference(seed, subscribers, base, window)
    mix = _Mix()
    manifest: dict = {"seed": seed, "base_time_ms": base, "window_ms": window,
                      "subscribers": subscribers, "fraud_enabled": fraud}

    suspended = _lifecycle(ref, mix, manifest)
    _orders(ref, mix, manifest, subscribers // 4 if orders is None else orders)
    _cdrs(ref, mix, cdrs, suspended)
    _alarms(ref, mix, manifest, storms, flaps)
    _logins(ref, mix)
    manifest["fraud"], extra_ref = _inject_fraud(ref, mix) if fraud else ({}, [])

    events = reference_events(seed, subscribers, base_time_ms=base, hours=hours)
    events += [(T_SUB, e["subscriber_id"], e) for e in extra_ref]
    events += mix.sorted()
    manifest["counts"] = dict(sorted(Counter(tp for tp, _k, _e in events).items()))
    manifest["event_types"] = dict(sorted(Counter(e["event_type"] for _t, _k, e in events).items()))
    manifest["plans"] = [f"{e['plan_id']}@{e['version']}" for e in ref.plans]
    return Workload(events, manifest)


# --------------------------------------------------------------------------- sections

def _lifecycle(ref: _Ref, mix: _Mix, manifest: dict) -> dict:
    """New lines, plan changes, suspensions, terminations, top-ups and payments. Returns
    {subscriber_id: (from, until)} of the suspensions (no traffic then)."""
    suspended = {}
    rng = random.Random(f"{ref.seed}/lifecycle")
    ids = _Ids(ref.seed, "L")
    when = _time_sampler(rng, ref.base, ref.window)
    end = ref.base + ref.window
    new_subs = []
    for s in ref.subs:
        if s.new:
            new_subs.append(s.sid)
            for ev in _creation_events(s, ids, random.Random(f"{ref.seed}/open/{s.sid}")):
                mix.add(T_SUB, ev)
            continue
        if s.terminated is None and rng.random() < 0.03:
            choices = [p for p in _PLANS_BY_PAYMENT[s.payment] if p != s.plan_id
                       and not (s.bb_type == "NONE" and p.startswith("E8"))]
            t = when()
            mix.add(T_SUB, _ev("PlanChanged", ids("PLC"), t, f"CRM-{s.prov}",
                               subscriber_id=s.sid, plan_id=rng.choice(choices)))
        if s.terminated is None and rng.random() < 0.02:
            t = when(ref.base, end - 6 * HOUR)
            mix.add(T_SUB, _ev("StatusChanged", ids("STC"), t, f"CRM-{s.prov}",
                               subscriber_id=s.sid, status="SUSPENDED", reason="LOST_SIM"))
            until = end + DAY
            if rng.random() < 0.6:
                until = t + rng.randrange(2 * HOUR, 6 * HOUR)
                mix.add(T_SUB, _ev("StatusChanged", ids("STC"), until, f"CRM-{s.prov}",
                                   subscriber_id=s.sid, status="ACTIVE", reason="SIM_REPLACED"))
            suspended[s.sid] = (t, until)
        if s.terminated is not None:
            mix.add(T_SUB, _ev("StatusChanged", ids("STC"), s.terminated, f"CRM-{s.prov}",
                               subscriber_id=s.sid, status="TERMINATED",
                               reason="CUSTOMER_REQUEST"))
        if s.payment == "PREPAID" and rng.random() < 0.15:
            channel = rng.choice(("APP", "APP", "ONLINE", "OUTLET", "BANK", "HOTLINE_10000"))
            t = when(ref.base, s.terminated or end)
            mix.add(T_SUB, _ev("BalanceRecharged", ids("RCG"), t,
                               f"CRM-{s.prov}" if channel in ("OUTLET", "HOTLINE_10000") else "IBSS",
                               subscriber_id=s.sid, channel=channel,
                               amount_li=rng.choice((30_000, 50_000, 50_000, 100_000, 200_000))))
        elif s.payment == "POSTPAID" and rng.random() < 0.05:
            t = when(ref.base, s.terminated or end)
            mix.add(T_SUB, _ev("BalanceRecharged", ids("RCG"), t, "IBSS", subscriber_id=s.sid,
                               channel=rng.choice(("BANK", "APP")),
                               amount_li=rng.randrange(59, 400) * 1000))
    manifest["new_subscribers"] = new_subs
    manifest["terminated_subscribers"] = sorted(s.sid for s in ref.subs if s.terminated)
    return suspended


def _orders(ref: _Ref, mix: _Mix, manifest: dict, n_orders: int):
    rng = random.Random(f"{ref.seed}/orders")
    ids = _Ids(ref.seed, "O")
    when = _time_sampler(rng, ref.base, ref.window)
    end = ref.base + ref.window
    owned: dict[str, set] = {}
    plans = []
    for i in range(n_orders):
        t = when(ref.base, end - 2 * HOUR)
        for _ in range(20):
            s = rng.choice(ref.subs)
            if s.alive(t) and (s.terminated is None or s.terminated > t + 3 * HOUR):
                break
        else:
            continue
        plans.append((t, i, s))
    plans.sort(key=lambda x: (x[0], x[1]))
    stats = Counter()
    wo_plans = []
    for t, i, s in plans:
        have = owned.setdefault(s.sid, set())
        eligible = [p for p, (_pt, _tg, bb) in _PRODUCTS.items()
                    if p not in have and (s.bb_type != "NONE" or not bb)]
        items = []
        if have and rng.random() < 0.2:
            p = rng.choice(sorted(have))
            items.append({"action": "REMOVE", "product_id": p, "product_type": _PRODUCTS[p][0]})
        for p in rng.sample(eligible, min(len(eligible), rng.choices((1, 2, 3), (60, 30, 10))[0])):
            items.append({"action": "ADD", "product_id": p, "product_type": _PRODUCTS[p][0]})
        order_id = ids("ORD")
        mix.add(T_ORDER, _ev("OrderSubmitted", ids("ORS"), t, f"CRM-{s.prov}", order_id=order_id,
                             subscriber_id=s.sid,
                             channel=rng.choice(("OUTLET", "ONLINE", "HOTLINE_10000", "APP", "APP")),
                             items=items), key=s.sid)
        stats["orders"] += 1
        targets = sorted({tg for it in items for tg in _PRODUCTS[it["product_id"]][1]})
        if not targets:
            stats["without_work_orders"] += 1
            _apply(have, items)
            continue
        wos = []
        for tg in targets:
            td = t + rng.randrange(1, 30) * SEC
            tc = td + rng.randrange(5 * SEC, 20 * MIN)
            wos.append([ids("WO"), tg, td, tc, rng.random() < 0.06])
        wo_plans.append((order_id, s, items, wos))
    # Guarantee at least one failed work order when there are enough orders to show one.
    if wo_plans and len(wo_plans) >= 5 and not any(w[4] for _o, _s, _i, ws in wo_plans for w in ws):
        wo_plans[len(wo_plans) // 2][3][0][4] = True
    for order_id, s, items, wos in wo_plans:
        failed = False
        for wo_id, tg, td, tc, fail in wos:
            mix.add(T_ORDER, _ev("WorkOrderDispatched", ids("WOD"), td, "IBSS", order_id=order_id, subscriber_id=s.sid,
                                 work_order_id=wo_id, target_system=tg), key=s.sid)
            mix.add(T_ORDER, _ev("WorkOrderCompleted", ids("WOC"), tc, tg, order_id=order_id, subscriber_id=s.sid,
                                 work_order_id=wo_id, result="FAILED" if fail else "SUCCESS",
                                 error=_WO_ERRORS[tg] if fail else None), key=s.sid)
            stats["work_orders"] += 1
            stats["failed_work_orders"] += fail
            failed = failed or fail
        stats["failed_orders" if failed else "completed_orders"] += 1
        if not failed:
            _apply(owned[s.sid], items)
    manifest["orders"] = {k: stats[k] for k in ("orders", "without_work_orders", "work_orders",
                                                "failed_work_orders", "completed_orders",
                                                "failed_orders")}


def _apply(have: set, items: list):
    for it in items:
        (have.add if it["action"] == "ADD" else have.discard)(it["product_id"])


def _cdrs(ref: _Ref, mix: _Mix, n: int, suspended: dict):
    rng = random.Random(f"{ref.seed}/cdrs")
    rnd = rng.random
    when = _time_sampler(rng, ref.base, ref.window)
    dom, intl = _number_pools(ref.seed)
    subs = ref.subs
    cum, acc = [], 0
    for s in subs:
        acc += s.weight
        cum.append(acc)
    provs = [p for p in _PROV_CODES]
    mo_per_hour = Counter()
    for i in range(n):
        t = when()
        for _ in range(50):
            s = subs[bisect.bisect_right(cum, rnd() * acc)]
            if s.alive(t) and not (s.sid in suspended
                                   and suspended[s.sid][0] <= t < suspended[s.sid][1]):
                break
        else:
            continue
        other = provs[int(rnd() * len(provs))]
        roam = (other, ref.cells_by_prov[other]) if other != s.prov else None
        # New lines have international dialling disabled for their first day.
        allow_intl = s.created < t - DAY
        ev = _cdr(rnd, s, t, f"CDR-{ref.seed}-{i + 1:08d}", f"MED-{ref.seed}-{i + 1:08d}",
                  dom, intl, allow_intl, roam)
        if ev["service"] == "VOICE" and ev["direction"] == "MO":
            bucket = (s.sid, t // HOUR)
            mo_per_hour[bucket] += 1
            if mo_per_hour[bucket] > 20:      # keep every line far from SIMBOX volumes
                ev["direction"] = "MT"
                ev["calling_number"], ev["called_number"] = ev["called_number"], s.msisdn
        mix.add(T_CDR, ev)


def _alarm(ids: _Ids, ref: _Ref, t: int, ne_id: str, cause: str, severity: str, text=None) -> dict:
    ne = ref.ne[ne_id]
    return _ev("Alarm", ids("ALE"), t, ne["source"], alarm_id=ids("ALM"), ne_id=ne_id,
               site_id=ne["site_id"], probable_cause=cause, severity=severity, text=text)


def _alarms(ref: _Ref, mix: _Mix, manifest: dict, storms: int, flaps: int):
    rng = random.Random(f"{ref.seed}/alarms")
    ids = _Ids(ref.seed, "A")
    when = _time_sampler(rng, ref.base, ref.window)
    end = ref.base + ref.window
    subs_per_ne = Counter(s.access_ne for s in ref.subs)
    # Storm roots: the OLTs serving the most subscribers, one per site.
    olts = []
    for site in ref.sites:
        for olt in site.olts:
            olts.append((-sum(subs_per_ne[o] for o in site.onus[olt]), olt, site))
    olts.sort(key=lambda x: (x[0], x[1]))
    used_sites, roots = set(), []
    for _n, olt, site in olts:
        if site.site_id not in used_sites and len(roots) < storms:
            used_sites.add(site.site_id)
            roots.append((olt, site))
    storm_info = []
    for k, (olt, site) in enumerate(roots):
        t0 = ref.base + ref.window * (k + 1) // (len(roots) + 1) + rng.randrange(-30, 30) * MIN
        alarm_ids = []
        onus = site.onus[olt]
        raised = []
        for onu in onus:
            ev = _alarm(ids, ref, t0 + rng.randrange(0, 8000), onu, "ONU_LOS", "MAJOR",
                        "ONU loss of signal (upstream fiber)")
            mix.add(T_ALARM, ev)
            alarm_ids.append(ev["alarm_id"])
            raised.append(ev)
        t_root = t0 + 20 * SEC + rng.randrange(-2000, 3000)
        root = _alarm(ids, ref, t_root, olt, "PON_BOARD_FAULT", "CRITICAL",
                      "PON service board fault, board reset failed")
        mix.add(T_ALARM, root)
        t_clear = t_root + rng.randrange(20, 45) * MIN
        mix.add(T_ALARM, _alarm(ids, ref, t_clear, olt, "PON_BOARD_FAULT", "CLEARED"))
        for onu in onus:
            mix.add(T_ALARM, _alarm(ids, ref, t_clear + rng.randrange(10, 60) * SEC, onu,
                                    "ONU_LOS", "CLEARED"))
        storm_info.append({"kind": "OLT_FAILURE", "root_ne_id": olt, "site_id": site.site_id,
                           "root_alarm_id": root["alarm_id"], "start_ms": t0,
                           "root_raised_ms": t_root, "cleared_ms": t_clear,
                           "symptom_ne_ids": list(onus), "symptom_alarm_ids": alarm_ids,
                           "affected_subscribers": sum(subs_per_ne[o] for o in onus)})
    flap_info = []
    flap_sites = [s for s in ref.sites if s.site_id not in used_sites]
    for k in range(flaps):
        site = flap_sites[(k * 5 + 3) % len(flap_sites)]
        t = ref.base + ref.window * (2 * k + 1) // (2 * flaps + 1) + rng.randrange(0, 20) * MIN
        t_first = t
        transitions = 0
        for _cycle in range(3):
            mix.add(T_ALARM, _alarm(ids, ref, t, site.bras, "LINK_DOWN", "MAJOR",
                                    "Uplink GE0/1/0 to CR01 down"))
            t += rng.randrange(30, 70) * SEC
            mix.add(T_ALARM, _alarm(ids, ref, t, site.bras, "LINK_DOWN", "CLEARED"))
            t += rng.randrange(40, 90) * SEC
            transitions += 2
        flap_info.append({"kind": "LINK_FLAPPING", "ne_id": site.bras, "site_id": site.site_id,
                          "probable_cause": "LINK_DOWN", "transitions": transitions,
                          "start_ms": t_first})
    # Background noise: distinct keys, most cleared, a few re-raised (deduplicated).
    all_ne = sorted(ref.ne)
    n_noise = 40
    keys = set()
    # Keep the noise off the storm and flapping sites so their incidents stay clean.
    busy_sites = used_sites | {f["site_id"] for f in flap_info}
    all_ne = [ne_id for ne_id in all_ne if ref.ne[ne_id]["site_id"] not in busy_sites]
    noise = 0
    while noise < n_noise:
        ne_id = rng.choice(all_ne)
        cause, sev = rng.choice(_NOISE_CAUSES[ref.ne[ne_id]["ne_type"]])
        if (ne_id, cause) in keys:
            continue
        keys.add((ne_id, cause))
        noise += 1
        t = when(ref.base, end - HOUR)
        mix.add(T_ALARM, _alarm(ids, ref, t, ne_id, cause, sev))
        if rng.random() < 0.1:
            t += rng.randrange(1, 5) * MIN
            mix.add(T_ALARM, _alarm(ids, ref, t, ne_id, cause, sev))
        if rng.random() < 0.85:
            mix.add(T_ALARM, _alarm(ids, ref, t + rng.randrange(2, 55) * MIN, ne_id, cause,
                                    "CLEARED"))
    manifest["storms"] = storm_info
    manifest["flapping"] = flap_info


def _logins(ref: _Ref, mix: _Mix):
    rng = random.Random(f"{ref.seed}/logins")
    ids = _Ids(ref.seed, "G")
    when = _time_sampler(rng, ref.base, ref.window)
    end = ref.base + ref.window
    for s in ref.subs:
        lo = max(ref.base, s.created + 10 * MIN)
        hi = min(end, s.terminated or end)
        if hi - lo < HOUR:
            continue
        for _ in range(rng.choices((0, 1, 2, 3, 4, 5), (10, 25, 25, 20, 12, 8))[0]):
            t = when(lo, hi)
            r = rng.random()
            if s.bb_account and r < 0.55:
                account, atype = s.bb_account, "BROADBAND"
                client = rng.choice(("EHOME_CLIENT", "EHOME_CLIENT", "TIANYI_BROADBAND"))
                ip = s.home_ip
            elif r < 0.9:
                account, atype = s.msisdn, "MSISDN"
                client = rng.choice(("TIANYI_LIVE", "ONLINE_HALL"))
                ip = _ip(rng, s.prov)
            else:
                account, atype, client = f"{s.msisdn}@189.cn", "PASSPORT", "ONLINE_HALL"
                ip = _ip(rng, s.prov)
            source = "EHOME" if client == "EHOME_CLIENT" else "UAM"

            def login(tt, result, acct=account, at=atype):
                return _ev("Login", ids("LGE"), tt, source, login_id=ids("LGN"), account=acct,
                           account_type=at, client=client, result=result, source_ip=ip,
                           province=s.prov, device_id=s.device)
            r = rng.random()
            if r < 0.06:     # mistyped password once or twice, then in
                tt = t
                for _b in range(rng.choice((1, 1, 2))):
                    tt -= rng.randrange(8, 40) * SEC
                    mix.add(T_LOGIN, login(tt, "BAD_PASSWORD"))
            elif r < 0.07:   # mistyped account number
                wrong = s.msisdn[:-2] + f"{(int(s.msisdn[-2:]) + 37) % 100:02d}"
                if wrong not in ref.msisdns:
                    mix.add(T_LOGIN, login(t - rng.randrange(10, 60) * SEC, "UNKNOWN_ACCOUNT",
                                           wrong, "MSISDN"))
            mix.add(T_LOGIN, login(t, "SUCCESS"))


# --------------------------------------------------------------------------- fraud injection

def _inject_fraud(ref: _Ref, mix: _Mix) -> tuple[dict, list]:
    """Adds the fraud events to ``mix``; returns the manifest part and the reference
    events (subscriber creations) of the dedicated fraud lines."""
    rng = random.Random(f"{ref.seed}/fraud")
    ids = _Ids(ref.seed, "F")
    base, window = ref.base, ref.window
    out: dict = {}
    dom, _intl = _number_pools(ref.seed)

    def record(rule, subject_type, subject, events, topic):
        ev_ids = []
        for ev in events:
            mix.add(topic, ev)
            ev_ids.append(ev["event_id"])
        times = [e["event_time"] for e in events]
        out[rule] = {"subject_type": subject_type, "subjects": [subject], "alerts": 1,
                     "event_ids": ev_ids, "window": [min(times), max(times)]}

    old = [s for s in ref.subs if not s.new and s.terminated is None]
    bb_subs = [s for s in old if s.bb_account]

    # LOGIN_BRUTE_FORCE: a password-guessing burst against one broadband account, then locked.
    victim = rng.choice(bb_subs or old)
    account = victim.bb_account or victim.msisdn
    atype = "BROADBAND" if victim.bb_account else "MSISDN"
    t = base + rng.randrange(window // 8, window // 3)
    ip = _ip(rng, "SC" if victim.prov != "SC" else "HB")
    evs = []
    for k in range(9):
        t += rng.randrange(3, 5) * SEC
        evs.append(_ev("Login", ids("LGE"), t, "UAM",
                       login_id=ids("LGN"), account=account, account_type=atype,
                       client="TIANYI_BROADBAND", result="BAD_PASSWORD" if k < 8 else "LOCKED",
                       source_ip=ip, province="SC" if victim.prov != "SC" else "HB",
                       device_id=f"{rng.getrandbits(64):016x}"))
    record("LOGIN_BRUTE_FORCE", "ACCOUNT", account, evs, T_LOGIN)

    # CREDENTIAL_STUFFING: one IP walking a leaked list of phone numbers.
    stuff_ip = f"103.152.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
    t = base + rng.randrange(window // 3, window // 2)
    known = rng.sample(old, min(12, len(old)))
    accounts = [(s.msisdn, "BAD_PASSWORD") for s in known]
    while len(accounts) < 30:
        m = rng.choice(_CT_PREFIXES) + f"{rng.randrange(10**8):08d}"
        if m not in ref.msisdns and m not in {a for a, _r in accounts}:
            accounts.append((m, "UNKNOWN_ACCOUNT"))
    rng.shuffle(accounts)
    evs = []
    for k, (acct, result) in enumerate(accounts):
        evs.append(_ev("Login", ids("LGE"), t + k * 1500 + rng.randrange(0, 1000), "UAM",
                       login_id=ids("LGN"), account=acct, account_type="MSISDN",
                       client="ONLINE_HALL", result=result, source_ip=stuff_ip, province="HK",
                       device_id=None))
    record("CREDENTIAL_STUFFING", "SOURCE_IP", stuff_ip, evs, T_LOGIN)

    # IMPOSSIBLE_TRAVEL: a home-province login, then one from Xinjiang four minutes later.
    traveller = rng.choice([s for s in old if s is not victim and s not in known] or old)
    t = base + rng.randrange(window // 2, window * 2 // 3)
    evs = [
        _ev("Login", ids("LGE"), t, "UAM", login_id=ids("LGN"), account=traveller.msisdn,
            account_type="MSISDN", client="TIANYI_LIVE", result="SUCCESS",
            source_ip=_ip(rng, traveller.prov), province=traveller.prov,
            device_id=traveller.device),
        _ev("Login", ids("LGE"), t + 4 * MIN + rng.randrange(0, 60) * SEC, "UAM",
            login_id=ids("LGN"), account=traveller.msisdn, account_type="MSISDN",
            client="TIANYI_LIVE", result="SUCCESS",
            source_ip=f"124.117.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}", province="XJ",
            device_id=f"{rng.getrandbits(64):016x}"),
    ]
    record("IMPOSSIBLE_TRAVEL", "ACCOUNT", traveller.msisdn, evs, T_LOGIN)

    # Dedicated lines for the CDR-based patterns (appended after the background ones).
    n = len(ref.subs)
    used = set(ref.msisdns)
    extra_ref = []

    def new_line(k, prov, payment, plan, created, bb=False):
        while True:
            msisdn = rng.choice(_CT_PREFIXES) + f"{rng.randrange(10**8):08d}"
            if msisdn not in used:
                used.add(msisdn)
                break
        city, area, region = _PROVINCES[prov][0][0]
        site = next(s for s in ref.sites if s.prov == prov and s.city == city)
        return _Sub(sid=f"SUB{n + k:08d}", msisdn=msisdn,
                    account_id=f"ACC{rng.randrange(10**10):010d}", prov=prov, city=city,
                    site_id=site.site_id, payment=payment, plan_id=plan,
                    real_name=rng.choice(_SURNAMES) + rng.choice(_GIVEN),
                    id_number=_id_number(rng, region),
                    bb_account=f"{area}{rng.randrange(10**8):08d}@{prov.lower()}" if bb else None,
                    bb_type="E8_1" if bb else "NONE",
                    access_ne=site.onus[site.olts[0]][0] if bb else site.bts[0],
                    created=created, home_ip=_ip(rng, prov),
                    device=f"{rng.getrandbits(64):016x}", cells=site.cells[:3], weight=1)

    cdr_no = [0]

    def cdr(s, t, called, duration, direction="MO", cell=None):
        cdr_no[0] += 1
        cid = f"CDR-{ref.seed}-F{cdr_no[0]:06d}"
        return {"event_type": "Cdr", "event_id": f"MED-{ref.seed}-F{cdr_no[0]:06d}",
                "event_time": t, "source": "MEDIATION", "cdr_id": cid, "subscriber_id": s.sid,
                "service": "VOICE", "direction": direction,
                "calling_number": s.msisdn if direction == "MO" else called,
                "called_number": called if direction == "MO" else s.msisdn,
                "start_time": t, "duration_s": duration, "bytes_up": None, "bytes_down": None,
                "cell_id": cell or s.cells[0], "province": s.prov}

    # IRSF: an established postpaid line suddenly calling satellite premium numbers.
    irsf = new_line(1, "GD", "POSTPAID", "TY-POST-59", base - 200 * DAY - 3 * HOUR, bb=True)
    # One call at a time; the third is short so the rule's hits (3rd and 4th call) fall
    # inside one 10-minute suppression interval: one alert.
    t = base + rng.randrange(window // 6, window // 3)
    evs = []
    for k in range(4):
        prefix = rng.choice(("00882", "00881", "00870"))
        duration = rng.randrange(120, 300) if k == 2 else rng.randrange(300, 900)
        evs.append(cdr(irsf, t, f"{prefix}{rng.randrange(10**7, 10**8)}", duration))
        t += duration * SEC + rng.randrange(30, 90) * SEC
    record("IRSF", "SUBSCRIBER", irsf.sid, evs, T_CDR)
    opening = _creation_events(irsf, ids, rng)
    out["IRSF"]["reference_event_ids"] = [e["event_id"] for e in opening]
    extra_ref += opening

    # SIMBOX: a prepaid SIM in a gateway: short calls to many numbers, one cell, no MT.
    simbox = new_line(2, "JS", "PREPAID", "TY-PRE-8", base - 40 * DAY + 5 * HOUR)
    t = base + rng.randrange(window // 2, window * 3 // 4)
    targets = rng.sample(dom, 55)
    evs = []
    for k in range(56):      # back to back, one SIM one call: 56 calls in under 52 min
        called = targets[k] if k < len(targets) else rng.choice(targets)
        duration = rng.randrange(15, 40)
        evs.append(cdr(simbox, t, called, duration))
        t += (duration + rng.randrange(5, 15)) * SEC
    record("SIMBOX", "SUBSCRIBER", simbox.sid, evs, T_CDR)
    opening = _creation_events(simbox, ids, rng)
    out["SIMBOX"]["reference_event_ids"] = [e["event_id"] for e in opening]
    extra_ref += opening

    # NEW_SUBSCRIBER_SPEND: a line opened in the window runs up long international calls.
    created = base + rng.randrange(HOUR, 4 * HOUR)
    newbie = new_line(3, "FJ", "PREPAID", "TY-PRE-19", created)
    evs = _creation_events(newbie, ids, rng)
    # Three calls stay under 100000 li (<= 1800 s at 2990 li/min); the fourth crosses it
    # (>= 2160 s in all): exactly one hit.
    t = created + rng.randrange(30, 90) * MIN
    for k in range(4):
        cc = rng.choice(("1", "44", "61", "65"))
        duration = rng.randrange(900, 1200) if k == 3 else rng.randrange(420, 601)
        evs.append(cdr(newbie, t, f"00{cc}{rng.randrange(10**8, 10**9)}", duration))
        t += duration * SEC + rng.randrange(20, 40) * MIN
    for ev in evs:
        mix.add(T_SUB if ev["event_type"] != "Cdr" else T_CDR, ev)
    times = [e["event_time"] for e in evs]
    out["NEW_SUBSCRIBER_SPEND"] = {"subject_type": "SUBSCRIBER", "subjects": [newbie.sid], "alerts": 1,
                                   "event_ids": [e["event_id"] for e in evs],
                                   "window": [min(times), max(times)]}
    return out, extra_ref


# --------------------------------------------------------------------------- benchmark stream

_BLOCK = 1024


def cdr_stream(seed: int = 7, n: int = 1_000_000, subscribers: int = 200, *,
               partitions: int = 1, partition: int = 0,
               base_time_ms: int | str = DEFAULT_BASE_TIME_MS, hours: int = 24
               ) -> Iterator[tuple]:
    """Yield ``n`` background CDRs as ``(topic, key, event)``, start times spread evenly
    over the window. Subscribers are those of ``reference_events(seed, subscribers, ...)``
    that exist for the whole window (never terminated, created before it), so every CDR
    rates. ``partitions``/``partition`` split the stream for parallel producers by blocks
    of 1024 CDRs: the union over all partitions is exactly the ``partitions=1`` stream.
    Ids (``CDRB-...``) never collide with ``generate()``'s."""
    base = _parse_base(base_time_ms)
    window = hours * HOUR
    ref = _reference(seed, subscribers, base, window)
    pool = [s for s in ref.subs if not s.new and s.terminated is None]
    if not pool:
        raise ValueError("no subscribers to generate CDRs for")
    dom, intl = _number_pools(seed)
    roams = [(p, ref.cells_by_prov[p]) for p in _PROV_CODES]
    npool, nroam = len(pool), len(roams)
    topic = T_CDR
    prefix = f"CDRB-{seed}-"
    for block in range(partition, -(-n // _BLOCK), partitions):
        rng = random.Random(f"{seed}/bench/{block}")
        rnd = rng.random
        for i in range(block * _BLOCK, min(n, (block + 1) * _BLOCK)):
            s = pool[int(rnd() * npool)]
            roam = roams[int(rnd() * nroam)]
            if roam[0] == s.prov:
                roam = None
            cid = prefix + str(i)
            t = base + i * window // n
            ev = _cdr(rnd, s, t, cid, "MED" + cid, dom, intl, True, roam)
            yield topic, s.sid, ev
