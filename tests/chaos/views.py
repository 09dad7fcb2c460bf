"""Asking the survivor's subscription views, during and after the two-worker case."""
from __future__ import annotations

import threading


def get(url: str):
    from processors.subscriptions.report import get_json

    return get_json(url, timeout=5)


class ViewPoller(threading.Thread):
    """One lookup every 0.5 s, round-robin over the demo subscribers: the views "keep
    answering" when every lookup got a 200 with a view."""

    def __init__(self, base: str, subscribers: dict[str, str]):
        super().__init__(name="chaos-views", daemon=True)
        self.base, self.msisdns = base, sorted(subscribers.values())
        self.ok = self.failed = 0
        self.failures: list = []
        self._quit = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._quit.is_set():
            code, body = get(f"{self.base}/ismp/{self.msisdns[i % len(self.msisdns)]}")
            if code == 200 and body:
                self.ok += 1
            else:
                self.failed += 1
                self.failures.append(code)
            i += 1
            self._quit.wait(0.5)

    def start(self) -> "ViewPoller":
        super().start()
        return self

    def quit(self) -> None:
        self._quit.set()


def check_views(base: str, subscribers: dict[str, str]) -> dict:
    """Every subscriber's view on ``base`` shows the latest version in
    ``bss.subscription.state``: the survivor both owns the changes and serves them."""
    from tests.helpers import read_topic

    latest: dict[str, int] = {}
    for _p, _o, k, v in read_topic("bss.subscription.state", timeout=120):
        latest[k] = max(latest.get(k, 0), v["version"])
    stale = []
    for sub, msisdn in sorted(subscribers.items()):
        code, body = get(f"{base}/ismp/{msisdn}")
        if code == 200 and body and body.get("subscriber_id") != sub:
            continue                        # a shared msisdn answers for another line
        got = body.get("version") if code == 200 and body else None
        if sub in latest and got != latest[sub]:
            stale.append((sub, got, latest[sub]))
    return {"ok": not stale, "checked": len(subscribers), "stale": len(stale), "examples": stale[:5]}
