import logging

logger = logging.getLogger(__name__)


def process(jobs):
    """Run each job (a callable); return how many succeeded."""
    ok = 0
    logger.info(f"starting {len(jobs)} jobs")
    for i, job in enumerate(jobs, 1):
        try:
            job()
        except Exception as exc:
            logger.error(f"job {i} failed: {exc}")
            continue
        ok += 1
        logger.info(f"job {i} done")
    logger.info(f"finished: {ok}/{len(jobs)} ok")
    return ok
