def process(jobs):
    """Run each job (a callable); return how many succeeded."""
    ok = 0
    print(f"starting {len(jobs)} jobs")
    for i, job in enumerate(jobs, 1):
        try:
            job()
        except Exception as exc:
            print(f"job {i} failed: {exc}")
            continue
        ok += 1
        print(f"job {i} done")
    print(f"finished: {ok}/{len(jobs)} ok")
    return ok
