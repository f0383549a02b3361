"""A tiny to-do list kept in todos.json.

    python todo.py add "buy milk"
    python todo.py list
"""
import json
import sys
from pathlib import Path

DB = Path("todos.json")


def load():
    return json.loads(DB.read_text()) if DB.exists() else []


def save(items):
    DB.write_text(json.dumps(items, indent=2))


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    command, args = argv[0], argv[1:]
    items = load()
    if command == "add":
        items.append({"text": " ".join(args), "done": False})
        save(items)
        print(f"added #{len(items)}")
    elif command == "list":
        for number, item in enumerate(items, 1):
            mark = "x" if item["done"] else " "
            print(f"{number}. [{mark}] {item['text']}")
    elif command == "done":
        try:
            number = int(args[0])
        except (IndexError, ValueError):
            print("usage: python todo.py done N", file=sys.stderr)
            return 1
        if not 1 <= number <= len(items):
            print(f"no item #{number}", file=sys.stderr)
            return 1
        items[number - 1]["done"] = True
        save(items)
        print(f"done #{number}")
    else:
        print(f"unknown command: {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
