"""Mail for the shifted corpus's DNSBL scenario: ``shift_mail.py SEED N OUT.mbox`` writes N messages in mbox form.

Each message came through one or two external relays (public IPv4 addresses in its Received headers) and links
to one to three web sites, so SpamAssassin's network tests (shift_day.sh runs ``spamassassin -t --mbox``) look
up every relay in its DNS blocklists and every linked domain in its URI blocklists, as a mail server's filter
does for each message it receives.
"""

from __future__ import annotations

import random
import sys
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

WORDS = [
    "north",
    "south",
    "river",
    "valley",
    "garden",
    "summer",
    "winter",
    "market",
    "station",
    "library",
    "museum",
    "harbour",
    "bridge",
    "castle",
    "forest",
    "meadow",
    "island",
    "village",
    "coffee",
    "service",
    "office",
    "account",
    "partner",
    "portal",
    "network",
    "cloud",
    "storage",
    "travel",
    "finance",
    "payroll",
    "shipping",
    "delivery",
    "tracking",
    "parcel",
    "offer",
    "deals",
    "invoice",
    "billing",
    "secure",
    "update",
    "notice",
]
TLDS = ["com", "net", "org", "info", "biz", "de", "co.uk", "io", "shop", "xyz"]


def public_ip(r: random.Random) -> str:
    while True:
        a = r.randint(1, 223)
        if a not in (10, 127, 169, 172, 192, 198, 100):
            return f"{a}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"


def domain(r: random.Random) -> str:
    return f"{r.choice(WORDS)}{r.choice(['', '-', ''])}{r.choice(WORDS)}{r.randint(1, 999)}.{r.choice(TLDS)}"


def main(seed: int, n: int, out: str) -> None:
    r = random.Random(seed)
    t = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc) + timedelta(days=seed % 97)
    with open(out, "w") as fh:
        for i in range(n):
            t += timedelta(seconds=r.randint(30, 900))
            sender = domain(r)
            relays = [public_ip(r) for _ in range(r.choice([1, 1, 2]))]
            links = [domain(r) for _ in range(r.randint(1, 3))]
            fh.write(f"From bounce@{sender} {t.strftime('%a %b %d %H:%M:%S %Y')}\n")
            hop = "mx.corp-example.com"
            for ip in relays:
                fh.write(
                    f"Received: from mail.{sender} (mail.{sender} [{ip}])\n\tby {hop} (Postfix) with ESMTPS id "
                    f"{r.getrandbits(40):010X}\n\tfor <user{i}@corp-example.com>; {format_datetime(t)}\n"
                )
                hop = f"mail.{sender}"
            fh.write(
                f"From: News <news@{sender}>\nTo: user{i}@corp-example.com\nSubject: {r.choice(WORDS)} "
                f"{r.choice(WORDS)} {r.randint(100, 9999)}\nDate: {format_datetime(t)}\n"
                f"Message-ID: <{r.getrandbits(64):016x}@{sender}>\n\n"
            )
            for d in links:
                fh.write(f"See https://www.{d}/{r.choice(WORDS)}?id={r.randint(1, 10**6)}\n")
            fh.write("\n")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
