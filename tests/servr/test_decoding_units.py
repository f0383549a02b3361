"""Pieces of the llama.cpp engine's decode loop, without a model: CPU topology, drafting, sampling."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from servr.engines.cpu import physical_cores
from servr.engines.lookup import DraftPolicy, find_draft
from servr.engines.sampling import Sampler


def _topology(root: Path, cpus: dict[int, tuple[int, int]]) -> Path:
    for cpu, (package, core) in cpus.items():
        topo = root / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    return root


def test_two_hardware_threads_per_core_count_once(tmp_path: Path) -> None:
    root = _topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})
    assert physical_cores(root, cpus=[0, 1, 2, 3]) == 2


def test_single_threaded_cores_all_count(tmp_path: Path) -> None:
    # the 2-core VM of issue 13: half of cpu_count gave 1 thread
    root = _topology(tmp_path, {0: (0, 0), 1: (0, 1)})
    assert physical_cores(root, cpus=[0, 1]) == 2


def test_same_core_id_on_two_packages_is_two_cores(tmp_path: Path) -> None:
    root = _topology(tmp_path, {0: (0, 0), 1: (1, 0), 2: (0, 0), 3: (1, 0)})
    assert physical_cores(root, cpus=[0, 1, 2, 3]) == 2


def test_only_the_cpus_the_process_may_use_count(tmp_path: Path) -> None:
    root = _topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 2), 3: (0, 3)})
    assert physical_cores(root, cpus=[1, 3]) == 2
    assert physical_cores(root, cpus=[2]) == 1


def test_unreadable_topology_counts_each_cpu_and_never_zero(tmp_path: Path) -> None:
    assert physical_cores(tmp_path, cpus=[0, 1, 2]) == 3
    assert physical_cores(tmp_path, cpus=[]) == 1


def test_this_machine_matches_lscpu() -> None:
    allowed = len(os.sched_getaffinity(0))
    cores = physical_cores()
    assert 1 <= cores <= allowed
    if shutil.which("lscpu") is None or allowed != (os.cpu_count() or 0):
        return  # lscpu counts every CPU, not only the ones this process may use
    out = subprocess.run(["lscpu", "-p=CORE,SOCKET"], capture_output=True, text=True, check=True).stdout
    pairs = {line for line in out.splitlines() if line and not line.startswith("#")}
    assert cores == len(pairs)


# --- drafting ------------------------------------------------------------------------------------
def _a(*tokens: int) -> np.ndarray:
    return np.array(tokens, dtype=np.int32)


def _draft(tokens: np.ndarray, k: int) -> list[int]:
    return find_draft(tokens, k)[0].tolist()


def test_draft_copies_what_followed_the_longest_match() -> None:
    # suffix (7, 8, 9): matched 3 long at index 0-2 (then 10, 11); (8, 9) alone at 5-6 (then 12)
    tokens = _a(7, 8, 9, 10, 11, 8, 9, 12, 1, 7, 8, 9)
    assert find_draft(tokens, 5)[1] == 3
    assert _draft(tokens, 5) == [10, 11, 8, 9, 12]
    assert _draft(tokens, 2) == [10, 11]


def test_draft_prefers_the_most_recent_of_equal_matches() -> None:
    tokens = _a(1, 2, 3, 1, 2, 4, 1, 2)
    assert find_draft(tokens, 3)[1] == 2
    assert _draft(tokens, 3) == [4, 1, 2]


def test_no_draft_below_the_minimum_ngram_or_without_a_match() -> None:
    for tokens, k in ((_a(5, 1, 6, 1), 4), (_a(1, 2, 3, 4), 4), (_a(1, 2), 4), (_a(1, 2, 1, 2), 0)):
        draft, match = find_draft(tokens, k)
        assert draft.size == 0 and match == 0


def test_draft_may_run_into_the_text_just_written() -> None:
    tokens = _a(4, 5, 4, 5, 4, 5)
    assert _draft(tokens, 4) == [4, 5]  # the match at 2-3 is followed by what comes after it


def test_policy_drafts_longer_while_drafts_hold_and_shorter_after_misses() -> None:
    policy = DraftPolicy(k_max=16)
    policy.plain_step(0.02)
    first = policy.want(8)
    assert first >= 1
    for _ in range(6):
        policy.checked(8, first, first, 0.02 + 0.002 * first)  # all held; a row costs a tenth of a step
    long = policy.want(8)
    assert long > first and long <= 16
    for _ in range(4):
        policy.checked(8, long, 0, 0.02 + 0.002 * long)
    assert policy.want(8) < long
    assert policy.checks == 10 and policy.accepted == 6 * first


def test_policy_learns_the_hit_rate_per_match_length() -> None:
    policy = DraftPolicy()
    policy.plain_step(0.02)
    for _ in range(5):
        policy.checked(2, 2, 0, 0.03)
        policy.checked(8, 4, 4, 0.03)
    assert policy.hit_rate(2) < 0.2 < 0.9 < policy.hit_rate(8)
    assert policy.want(8) > 0
    assert policy.hit_rate(12) == policy.hit_rate(8)  # 8 and longer share one estimate


def test_policy_passes_over_matches_that_do_not_pay_longer_each_time() -> None:
    policy = DraftPolicy()
    policy.plain_step(0.02)
    skipped = []
    for _ in range(4):
        k = policy.want(2)
        while k > 0:  # nothing holds and each drafted row costs half a step
            policy.checked(2, k, 0, 0.02 + 0.01 * k)
            k = policy.want(2)
        passes = 0
        while policy.want(2) == 0:
            passes += 1
        skipped.append(passes)
    assert skipped == [4, 8, 16, 32]  # then one 1-token probe each time
    assert policy.want(8) > 0  # other match lengths are judged on their own


def test_policy_does_not_draft_when_rows_cost_as_much_as_steps_and_half_the_guesses_fail() -> None:
    policy = DraftPolicy(plain_s=0.02, extra_s=0.02)
    assert policy.want(2) == 0


# --- sampling ------------------------------------------------------------------------------------
LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], dtype=np.float32))


def test_greedy_takes_the_highest_logit_and_verifies_only_it() -> None:
    sampler = Sampler(temperature=0.0)
    assert sampler.sample(LOGITS, 0) == 0
    assert sampler.verify(LOGITS, 0, 0) == (True, 0)
    assert sampler.verify(LOGITS, 3, 0) == (False, 0)


def test_same_seed_same_draws_whatever_the_order_of_calls() -> None:
    a = Sampler(temperature=1.0, seed=1234)
    b = Sampler(temperature=1.0, seed=1234)
    forward = [a.sample(LOGITS, i) for i in range(50)]
    assert forward == [b.sample(LOGITS, i) for i in range(50)]
    assert forward[::-1] == [b.sample(LOGITS, i) for i in reversed(range(50))]  # a pure function of the position
    assert forward != [Sampler(temperature=1.0, seed=99).sample(LOGITS, i) for i in range(50)]
    assert Sampler(temperature=1.0, seed=-5).sample(LOGITS, 0) in range(5)  # any int is a seed


def test_a_draft_is_accepted_exactly_when_sampling_would_have_picked_it() -> None:
    """So what a seed gives does not depend on what was drafted (the policy adapts to the clock)."""
    sampler = Sampler(temperature=0.8, top_p=0.9, seed=3)
    for position in range(200):
        token = sampler.sample(LOGITS, position)
        for draft in range(5):
            assert sampler.verify(LOGITS, draft, position) == (draft == token, token)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    sampler = Sampler(temperature=1.0, top_p=0.7, seed=0)
    p, ids = sampler.probs(LOGITS)
    assert ids.tolist() == [0, 1]
    assert np.allclose(p, [0.5 / 0.7, 0.2 / 0.7])


def test_penalties_lower_generated_tokens() -> None:
    sampler = Sampler(temperature=0.0, presence_penalty=2.0, frequency_penalty=0.0)
    sampler.accept(0)
    assert sampler.sample(LOGITS, 1) == 1


@pytest.mark.parametrize("top_p,draft", [(1.0, 0), (1.0, 3), (0.8, 1), (0.8, 4)])
def test_verify_accepts_with_p_of_the_draft_and_otherwise_draws_from_the_rest(top_p: float, draft: int) -> None:
    """Accepted with probability p(draft); when not, the token is distributed as p without the
    draft, renormalised: together, what comes out is distributed as p."""
    n = 40_000
    sampler = Sampler(temperature=1.0, top_p=top_p, seed=7)
    results = [sampler.verify(LOGITS, draft, i) for i in range(n)]
    p, ids = Sampler(temperature=1.0, top_p=top_p).probs(LOGITS)
    expected = np.zeros(5)
    expected[ids] = p
    accepted = sum(ok for ok, _ in results) / n
    assert abs(accepted - expected[draft]) < 0.012
    counts = Counter(token for ok, token in results if not ok)
    rest = expected.copy()
    rest[draft] = 0.0
    rest /= rest.sum()
    observed = np.array([counts[i] for i in range(5)]) / max(1, sum(counts.values()))
    assert np.abs(observed - rest).max() < 0.015, (observed, rest)
