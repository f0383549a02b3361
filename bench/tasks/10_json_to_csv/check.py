import json

from checklib import TASK_DIR, expect, read, read_csv

users = json.loads((TASK_DIR / "ws" / "users.json").read_text())["users"]
header = read("users.csv").splitlines()[0]
expect([h.strip() for h in header.split(",")] == ["name", "email", "age"], f"header is {header!r}")
rows = read_csv("users.csv")
expect(len(rows) == len(users), f"{len(rows)} rows, expected {len(users)}")
for row, user in zip(rows, users):
    expect(row["name"] == user["name"] and row["email"] == user["email"] and row["age"] == str(user["age"]),
           f"row {row} does not match user {user['id']}")
