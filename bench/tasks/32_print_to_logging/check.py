import ast
import contextlib
import io
import logging

from checklib import expect, load, read

tree = ast.parse(read("worker.py"))
prints = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
expect(not prints, "print() calls are left in worker.py")
m = load("worker")
expect(isinstance(getattr(m, "logger", None), logging.Logger) and m.logger.name == "worker",
       "no module-level logger = logging.getLogger(__name__)")


class Grab(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.levelname, record.getMessage()))


grab = Grab()
root = logging.getLogger()
root.addHandler(grab)
root.setLevel(logging.DEBUG)


def boom():
    raise RuntimeError("disk full")


out = io.StringIO()
with contextlib.redirect_stdout(out):
    ok = m.process([lambda: None, boom, lambda: None])
expect(ok == 2, f"process returned {ok}")
expect(not out.getvalue(), f"still prints: {out.getvalue()!r}")
want = [("INFO", "starting 3 jobs"), ("INFO", "job 1 done"), ("ERROR", "job 2 failed: disk full"),
        ("INFO", "job 3 done"), ("INFO", "finished: 2/3 ok")]
expect(grab.records == want, f"logged {grab.records}")
