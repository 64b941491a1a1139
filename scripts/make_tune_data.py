"""Write the two instruction datasets shipped in adapterhub/data/ (deterministic: rerunning gives the same bytes).

- dates: a date written in one of many styles, sometimes inside a sentence -> its ISO 8601 form (Vertex format)
- records: a sentence about a person -> a JSON record of named fields (chat `messages` format)
Each has a train split (256 examples) and a held-out split (64) drawn from disjoint values.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "adapterhub" / "data"
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"]


def ordinal(n: int) -> str:
    return f"{n}{'th' if 11 <= n % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def date_text(d: dt.date, style: int) -> str:
    m = MONTHS[d.month - 1]
    return [
        f"{m} {d.day}, {d.year}", f"{d.day} {m} {d.year}", f"the {ordinal(d.day)} of {m}, {d.year}", f"{m[:3]} {d.day} {d.year}",
        f"{d.year}/{d.month:02d}/{d.day:02d}", f"{d.strftime('%A')}, {m} {d.day}, {d.year}", f"{m} {ordinal(d.day)} {d.year}",
        f"{d.day}-{m[:3]}-{d.year}",
    ][style]  # fmt: skip


def dates(rng: random.Random, n: int, seen: set[dt.date]) -> list[dict[str, str]]:
    frames = ["{}", "The meeting is on {}.", "Invoice dated {}", "Born {}", "Deadline: {}", "We moved in on {}."]
    rows = []
    while len(rows) < n:
        d = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(0, 80 * 365))
        if d in seen:
            continue
        seen.add(d)
        text = rng.choice(frames).format(date_text(d, rng.randrange(8)))
        rows.append({"input_text": f"Rewrite the date in ISO 8601 form (YYYY-MM-DD): {text}", "output_text": d.isoformat()})
    return rows


FIRST = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Gustav", "Hana", "Ivan", "Jonas", "Keiko", "Liam", "Maria", "Nadia",
         "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tara", "Umar", "Vera", "Wei", "Yusuf", "Zoe"]  # fmt: skip
LAST = ["Smith", "Rossi", "Wang", "Okafor", "Novak", "Garcia", "Berg", "Tanaka", "Kumar", "Dubois", "Silva", "Moreau", "Ali", "Kim"]
CITIES = ["Berlin", "Lagos", "Lima", "Osaka", "Toronto", "Lyon", "Pune", "Oslo", "Quito", "Porto", "Nairobi", "Seoul", "Austin", "Cairo"]
JOBS = ["nurse", "teacher", "pilot", "chef", "lawyer", "plumber", "architect", "baker", "farmer", "dentist", "engineer", "librarian"]
SENTENCES = [
    "{name} is a {age}-year-old {job} from {city}.", "Meet {name}, {age}, who works as {a_job} in {city}.",
    "{city} is home to {name}, {a_job} aged {age}.", "At {age}, {name} works as {a_job} and lives in {city}.",
    "Our new {job}, {name} ({age}), just arrived from {city}.",
]  # fmt: skip
SYSTEM = 'Extract a JSON record with the fields "name", "age", "city" and "job" from the user\'s sentence. Reply with the JSON only.'


def records(rng: random.Random, n: int, seen: set[tuple[str, int, str, str]]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    while len(rows) < n:
        name, age = f"{rng.choice(FIRST)} {rng.choice(LAST)}", rng.randrange(19, 80)
        city, job = rng.choice(CITIES), rng.choice(JOBS)
        if (name, age, city, job) in seen:
            continue
        seen.add((name, age, city, job))
        sentence = rng.choice(SENTENCES).format(name=name, age=age, city=city, job=job, a_job=("an " if job[0] in "aeiou" else "a ") + job)
        answer = json.dumps({"name": name, "age": age, "city": city, "job": job})
        rows.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": sentence},
                                  {"role": "assistant", "content": answer}]})  # fmt: skip
    return rows


def write(name: str, rows: list[dict[str, object]] | list[dict[str, str]]) -> None:
    (OUT / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    rng = random.Random(13)
    seen_d: set[dt.date] = set()
    write("dates-heldout.jsonl", dates(rng, 64, seen_d))
    write("dates-train.jsonl", dates(rng, 256, seen_d))
    seen_r: set[tuple[str, int, str, str]] = set()
    write("records-heldout.jsonl", records(rng, 64, seen_r))
    write("records-train.jsonl", records(rng, 256, seen_r))


if __name__ == "__main__":
    main()
