"""A seeded generator of realistic interaction logs for a customer-support assistant.

Each day has a topic mix that shifts from day to day, user feedback, injected personal data
(names, emails, phone numbers, card numbers, IBANs, addresses, API keys) and a few malformed
records, so every stage of a cycle has something real to do. The same seed gives the same bytes.

    python -m pipelines.samples.sample_logs --out logs/ --start 2026-01-05 --days 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import string
from pathlib import Path

TOPICS = ["billing", "shipping", "returns", "account", "technical", "subscription"]

FIRST_NAMES = ["Maria", "James", "Aisha", "Chen", "Lukas", "Sofia", "Omar", "Priya", "Jonas",
               "Elena", "Kwame", "Hannah", "Mateo", "Yuki", "Fatima", "Noah", "Ingrid", "Ravi"]
LAST_NAMES = ["Garcia", "Smith", "Khan", "Wei", "Becker", "Rossi", "Haddad", "Patel", "Berg",
              "Novak", "Mensah", "Schmidt", "Lopez", "Tanaka", "Ali", "Brown", "Larsen", "Iyer"]
STREETS = ["Maple Street", "Oak Avenue", "Harbor Road", "Elm Lane", "King Street", "Mill Road"]
CITIES = ["Springfield", "Riverton", "Lakeside", "Fairview", "Brookfield", "Ashford"]
PRODUCTS = ["wireless headphones", "coffee grinder", "standing desk", "phone case",
            "laptop stand", "smart speaker", "running shoes", "water bottle", "desk lamp"]
PLANS = ["Basic", "Plus", "Pro", "Family"]
DEVICES = ["iPhone", "Android phone", "Windows laptop", "MacBook", "tablet"]

# Each topic: (user templates, assistant template). Slots in {braces} are filled per record;
# the assistant answer reuses the user's slots, so there is something consistent to learn.
TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "billing": [
        ("I was charged twice for order {order}. Can you refund the extra {amount}?",
         "I'm sorry about the double charge on order {order}. I have requested a refund of "
         "{amount}; it will reach your card within 5 business days."),
        ("Why is my invoice for {month} higher than usual?",
         "Your {month} invoice includes a one-time fee for the {plan} plan upgrade. From next "
         "month the amount returns to the regular price."),
        ("How do I update the card on file? The new one is {card}.",
         "You can update your card under Settings > Billing > Payment methods. For your "
         "security, please never share full card numbers in chat."),
    ],
    "shipping": [
        ("Where is my order {order}? It was supposed to arrive {weekday}.",
         "Order {order} left our warehouse and is with the carrier. The tracking page shows "
         "delivery by {weekday} evening. I will send you an update if that changes."),
        ("Can you ship order {order} to {address} instead?",
         "I have updated the delivery address for order {order}. You will get a confirmation "
         "email shortly."),
        ("My package for order {order} says delivered but I did not get it.",
         "I'm sorry your package is missing. I have opened a carrier investigation for order "
         "{order}; if it is not found within 48 hours we will send a replacement."),
    ],
    "returns": [
        ("I want to return the {product} from order {order}. It stopped working.",
         "I'm sorry the {product} stopped working. I have created a return label for order "
         "{order}; print it and drop the parcel at any post office within 30 days."),
        ("How long does a refund take after I send back the {product}?",
         "Once we receive the {product}, the refund is issued within 3 business days and shows "
         "on your statement 5 to 10 days later."),
        ("Can I exchange the {product} for a different color?",
         "Yes, you can exchange the {product} for free within 30 days. Start the exchange from "
         "Orders > Return or exchange and pick the new color."),
    ],
    "account": [
        ("I can't log in. My email is {email} and the reset link never arrives.",
         "I have sent a new password reset link. Please check your spam folder; the link is "
         "valid for 30 minutes."),
        ("Please change the phone number on my account to {phone}.",
         "Your phone number has been updated. You will receive a verification code by text "
         "message to confirm the change."),
        ("Hi, I'm {name}. How do I delete my account and all my data?",
         "You can delete your account under Settings > Privacy > Delete account. All personal "
         "data is removed within 30 days, as required by law."),
    ],
    "technical": [
        ("The app crashes on my {device} every time I open the cart.",
         "Thanks for reporting this. Please update the app to the latest version and restart "
         "your {device}; this fixes the cart crash for most users."),
        ("My API calls fail with 401. I'm using key {api_key}, what is wrong?",
         "A 401 means the key was rejected. Please rotate the key in the developer dashboard "
         "right away, since it was shared in this chat, and use the new one."),
        ("The {product} won't connect to my {device} over Bluetooth.",
         "Please turn Bluetooth off and on, hold the {product}'s power button for 10 seconds "
         "to reset it, and pair it again from your {device}'s settings."),
    ],
    "subscription": [
        ("How do I cancel my {plan} subscription?",
         "You can cancel the {plan} subscription under Settings > Subscription > Cancel. You "
         "keep access until the end of the current billing period."),
        ("Can I switch from {plan} to the yearly plan?",
         "Yes. Switching from {plan} to yearly billing saves two months; the remaining days of "
         "this month are credited to your first yearly invoice."),
        ("Please pause my {plan} membership for {months} months, my IBAN is {iban}.",
         "I have paused your {plan} membership for {months} months. You will not be charged "
         "during the pause. Please avoid sharing bank details in chat."),
    ],
}

SYSTEM_PROMPT = "You are a helpful customer support assistant for an online store."


def luhn_complete(digits: str) -> str:
    """Append the Luhn check digit, so generated card numbers are valid ones."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


def iban_de(rng: random.Random) -> str:
    """A German IBAN with a correct ISO 13616 check number."""
    bban = "".join(rng.choice(string.digits) for _ in range(18))
    numeric = "".join(str(int(c, 36)) for c in bban + "DE00")
    check = 98 - int(numeric) % 97
    return f"DE{check:02d}{bban}"


# The slots that identify a person or hold a secret: redaction must leave none of them.
PERSONAL_SLOTS = ("name", "email", "phone", "card", "iban", "address", "api_key")
# ... and what redaction leaves in their place.
PLACEHOLDERS = {"name": "<PERSON_1>", "email": "<EMAIL_ADDRESS_1>", "phone": "<PHONE_NUMBER_1>",
                "card": "<CREDIT_CARD_1>", "iban": "<IBAN_CODE_1>", "address": "<STREET_ADDRESS_1>",
                "api_key": "<API_KEY_1>"}


def fill_slots(rng: random.Random) -> dict[str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    card = luhn_complete("4" + "".join(rng.choice(string.digits) for _ in range(14)))
    card_formats = [card, " ".join(card[i:i + 4] for i in range(0, 16, 4)),
                    "-".join(card[i:i + 4] for i in range(0, 16, 4))]
    phone_formats = [
        f"+1 {rng.randint(201, 989)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}",
        f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
        f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
        f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
    ]
    key_formats = [
        "sk-" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(40)),
        "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
        "ghp_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(36)),
    ]
    return {
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com",
        "phone": rng.choice(phone_formats),
        "card": rng.choice(card_formats),
        "iban": iban_de(rng),
        "address": f"{rng.randint(1, 240)} {rng.choice(STREETS)}, {rng.choice(CITIES)}",
        "api_key": rng.choice(key_formats),
        "order": f"#{rng.randint(100000, 999999)}",
        "amount": f"${rng.randint(5, 400)}.{rng.randint(0, 99):02d}",
        "month": rng.choice(["January", "February", "March", "April", "May", "June"]),
        "weekday": rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
        "product": rng.choice(PRODUCTS),
        "plan": rng.choice(PLANS),
        "device": rng.choice(DEVICES),
        "months": str(rng.randint(1, 6)),
    }


def topic_weights(day_index: int, shift: float) -> list[float]:
    """Topic mix of one day: a bump that moves one topic along per day, so the mix drifts.

    shift = 0 gives a uniform mix every day; shift near 1 puts most mass on one or two topics.
    """
    n = len(TOPICS)
    focus = day_index % n
    weights = []
    for i in range(n):
        distance = min((i - focus) % n, (focus - i) % n)
        weights.append((1.0 - shift) + shift * (3.0 if distance == 0 else 1.0 if distance == 1 else 0.1))
    return weights


def make_record(rng: random.Random, day: dt.date, index: int, topic: str,
                templates: dict[str, list[tuple[str, str]]] = TEMPLATES,
                personal: set[str] | None = None, redacted: bool = False) -> dict:
    """One support dialogue. `personal`, if given, gets the personal values the record holds
    (the slots of PERSONAL_SLOTS it uses, the name's parts, its user id). `redacted` writes the
    personal slots as the placeholders redaction leaves (`<PERSON_1>`), drawing the same values."""
    user_t, assistant_t = rng.choice(templates[topic])
    slots = fill_slots(rng)
    if redacted:
        slots = {**slots, **PLACEHOLDERS}
    # A quarter of users introduce themselves by name, which the assistant echoes back.
    user_text = user_t.format(**slots)
    greeting = ""
    if rng.random() < 0.25:
        user_text = f"Hello, this is {slots['name']}. " + user_text
        greeting = f"Hi {slots['name'].split()[0]}! "
    ts = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=rng.randint(0, 86399))
    if personal is not None:
        text = user_text + greeting + assistant_t.format(**slots)
        values = [slots[k] for k in PERSONAL_SLOTS] + slots["name"].split()
        personal.update(v for v in values if v in text)
        personal.add(user_id(slots["name"]))
    return {
        "id": f"{day.isoformat()}-{index:05d}",
        "timestamp": ts.replace(tzinfo=dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_text},
            {"role": "assistant", "content": greeting + assistant_t.format(**slots)},
        ],
        "feedback": rng.choices(["up", "down", None], weights=[0.5, 0.1, 0.4])[0],
        "metadata": {"topic": topic, "channel": rng.choice(["web", "app", "email"]),
                     "user_id": user_id(slots["name"])},
    }


def user_id(name: str) -> str:
    """The account id the assistant logs for the person of a sample record: the same person,
    the same id, on every night (what `nightshift forget --user-id` finds them by)."""
    return "u-" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]


def malformed_lines(rng: random.Random, day: dt.date, good: list[dict]) -> list[str]:
    """The kinds of broken lines real logs contain; each must end in quarantine or dedup."""
    ts = good[len(good) // 2]["timestamp"]
    base = dict(good[0])
    return [
        '{"id": "' + f"{day}-broken" + '", "timestamp": "' + ts + '", "messages": [',  # cut off
        json.dumps({"id": f"{day}-nomsg", "timestamp": ts, "feedback": None}),  # missing field
        json.dumps({**base, "id": f"{day}-badrole",
                    "messages": [{"role": "wizard", "content": "abracadabra"}]}),
        json.dumps({**base, "id": f"{day}-empty",
                    "messages": [{"role": "user", "content": ""},
                                 {"role": "assistant", "content": ""}]}),
        json.dumps(good[1]),  # the same interaction logged twice
        # a flat prompt/response record from an older client, valid and converted on input
        json.dumps({"id": f"{day}-flat", "timestamp": ts, "prompt": "Do you ship abroad?",
                    "response": "Yes, we ship to over 40 countries; rates show at checkout."}),
    ]


def generate_day(seed: int, day: dt.date, day_index: int, records: int, shift: float,
                 personal: set[str] | None = None) -> list[str]:
    """All log lines of one day, in timestamp order where they have one; `personal`, if given,
    gets every personal value they hold."""
    rng = random.Random(f"{seed}-{day.isoformat()}")
    weights = topic_weights(day_index, shift)
    good = [make_record(rng, day, i, rng.choices(TOPICS, weights=weights)[0], personal=personal)
            for i in range(records)]
    good.sort(key=lambda r: r["timestamp"])
    lines = [json.dumps(r, ensure_ascii=False) for r in good]
    bad = malformed_lines(rng, day, good)
    for line in bad:
        lines.insert(rng.randint(1, len(lines) - 1), line)
    return lines


def personal_values(start: dt.date, days: int, records_per_day: int, seed: int,
                    topic_shift: float) -> set[str]:
    """Every personal value (names, emails, phones, cards, IBANs, keys, addresses, user ids) of
    the logs `generate` writes with the same arguments: what must never rest outside them."""
    personal: set[str] = set()
    for d in range(days):
        generate_day(seed, start + dt.timedelta(days=d), d, records_per_day, topic_shift, personal)
    return personal


def generate(out: Path | str, start: dt.date, days: int, records_per_day: int, seed: int,
             topic_shift: float, fmt: str = "jsonl", table: str = "interactions") -> list[Path | str]:
    """Write `days` days of logs: one JSONL file per day, or rows of a SQL table.

    fmt "jsonl": `out` is a folder; "sqlite": `out` is the .db file; "sql": `out` is any
    SQLAlchemy URL (postgresql+psycopg2://user:password@host/db, ...). A table is dropped and
    recreated as (id TEXT, timestamp TEXT, record TEXT), the raw line in `record`.
    Returns what was written (files, or the URL). The same arguments write the same bytes.
    """
    lines_by_day = [(start + dt.timedelta(days=d),
                     generate_day(seed, start + dt.timedelta(days=d), d, records_per_day, topic_shift))
                    for d in range(days)]
    if fmt == "jsonl":
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path | str] = []
        for day, lines in lines_by_day:
            path = out / f"{day.isoformat()}.jsonl"
            path.write_text("\n".join(lines) + "\n")
            written.append(path)
        return written
    if fmt == "sqlite":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_sql_table(f"sqlite:///{Path(out).resolve()}", table, lines_by_day)
        return [Path(out)]
    if fmt == "sql":
        write_sql_table(str(out), table, lines_by_day)
        return [str(out)]
    raise ValueError(f"unknown format {fmt!r}: use 'jsonl', 'sqlite' or 'sql'")


def write_sql_table(url: str, table: str, lines_by_day: list[tuple[dt.date, list[str]]]) -> None:
    """(Re)create `table` at a SQLAlchemy URL and insert one row per log line.

    A line that is not JSON (cut off mid-record) keeps a NULL id and noon of its day as timestamp,
    as a logger that writes the raw text would.
    """
    import sqlalchemy as sa

    tbl = sa.Table(table, sa.MetaData(), sa.Column("id", sa.Text), sa.Column("timestamp", sa.Text),
                   sa.Column("record", sa.Text))
    rows = []
    for day, lines in lines_by_day:
        for line in lines:
            try:
                parsed = json.loads(line)
                rid, ts = parsed.get("id"), parsed.get("timestamp")
            except json.JSONDecodeError:
                rid, ts = None, f"{day.isoformat()}T12:00:00Z"
            rows.append({"id": rid, "timestamp": ts, "record": line})
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            tbl.drop(conn, checkfirst=True)
            tbl.create(conn)
            if rows:
                conn.execute(tbl.insert(), rows)
    finally:
        engine.dispose()


def corpus_dialogues(seed: int, records: int) -> list[list[dict]]:
    """Dialogues for pre-training the tiny base model: every topic, but only its first template.

    The base model thus knows the store's language and the chat format, while most answers in the
    daily logs are new to it: there is something real for each night's adapter to learn. They
    are written as redaction leaves them (`<PERSON_1>`, `<EMAIL_ADDRESS_1>`), the form every
    record it is later tuned on has: the base model learns no person's name.
    """
    rng = random.Random(f"corpus-{seed}")
    day = dt.date(2025, 1, 1)
    first_only = {topic: templates[:1] for topic, templates in TEMPLATES.items()}
    return [make_record(rng, day, i, TOPICS[i % len(TOPICS)], first_only, redacted=True)["messages"]
            for i in range(records)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.samples.sample_logs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True,
                        help="folder for JSONL files, the .db file with --format sqlite, or a "
                             "SQLAlchemy URL (postgresql+psycopg2://...) with --format sql")
    parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 1, 5))
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--records-per-day", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--topic-shift", type=float, default=0.8,
                        help="0 = same topic mix every day, 1 = strongly shifting mix")
    parser.add_argument("--format", choices=["jsonl", "sqlite", "sql"], default="jsonl")
    parser.add_argument("--table", default="interactions", help="table name with --format sqlite/sql")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.start, args.days, args.records_per_day, args.seed,
                         args.topic_shift, args.format, args.table):
        print(path)


if __name__ == "__main__":
    main()
