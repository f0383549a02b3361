from checklib import TASK_DIR, expect, number_in, read

log = (TASK_DIR / "ws" / "app.log").read_text().splitlines()
want = sum(line.split()[2] == "ERROR" for line in log)
got = number_in(read("errors.txt"))
expect(got == want, f"errors.txt says {got}, expected {want}")
