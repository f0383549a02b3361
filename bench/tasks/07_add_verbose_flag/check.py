from checklib import expect, run

r = run(["python", "greet.py", "Ada"])
expect(r.returncode == 0 and r.stdout == "Hello, Ada!\n", f"without --verbose: {r.stdout!r} {r.stderr[-300:]}")
r = run(["python", "greet.py", "Ada", "--times", "2"])
expect(r.stdout == "Hello, Ada!\nHello, Ada!\n", f"--times broke: {r.stdout!r} {r.stderr[-300:]}")
r = run(["python", "greet.py", "--verbose", "Ada"])
expect(r.returncode == 0, f"--verbose fails: {r.stderr[-300:]}")
lines = r.stdout.splitlines()
expect(lines[:1] == ["verbose mode"] and "Hello, Ada!" in lines[1:], f"with --verbose: {r.stdout!r}")
