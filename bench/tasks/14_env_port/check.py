import os

from checklib import expect, run

probe = "import config; print(repr(config.PORT), repr(config.HOST))"
env = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST")}
os.environ.clear()
os.environ.update(env)
r = run(["python", "-c", probe])
expect(r.stdout.strip() == "8000 '127.0.0.1'", f"without PORT: {r.stdout.strip()} {r.stderr[-300:]}")
r = run(["python", "-c", probe], env={"PORT": "9123"})
expect(r.stdout.strip() == "9123 '127.0.0.1'", f"with PORT=9123: {r.stdout.strip()} {r.stderr[-300:]}")
