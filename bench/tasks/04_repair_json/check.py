from checklib import expect, read_json

got = read_json("config.json")
want = {
    "name": "inventory-service",
    "port": 8081,
    "debug": False,
    "database": {"host": "db.internal", "port": 5432, "user": "inventory"},
    "features": ["search", "export", "audit"],
    "retries": 3,
    "timeout_s": 12.5,
}
expect(got == want, f"config.json parses but its settings changed: {got}")
