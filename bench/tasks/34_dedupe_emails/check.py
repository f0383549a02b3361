from checklib import expect, read

got = [line.strip() for line in read("emails.txt").splitlines() if line.strip()]
want = ["ada@example.com", "grace@example.com", "alan@example.com", "linus@example.com",
        "barbara@example.com", "ken@example.com", "dennis@example.com"]
expect(got == want, f"emails.txt is {got}")
