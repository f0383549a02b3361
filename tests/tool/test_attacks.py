"""The attack suite: each attack tried through the real tools in the real sandbox, next to its control.

The cases live in ``attack_cases.py`` (``bench/sandbox_bench.py`` also runs them unconfined, to
show how many succeed without the sandbox). Here, confined, every control must work — the
same tool, the same sandbox, the harmless version — and no attack may have its effect, checked
on the host. An attack that only failed because nothing could start would fail its control.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from attack_cases import CASES, Case, Lab
from sandbox_helpers import require_bwrap


@pytest.mark.parametrize("case", CASES, ids=[f"{c.item}: {c.name}" for c in CASES])
def test_the_attack_fails_where_its_control_works(case: Case, tmp_path: Path) -> None:
    require_bwrap()
    attack_lab, control_lab = Lab(tmp_path / "attack", confined=True), Lab(tmp_path / "control", confined=True)
    try:
        reason = case.needs(attack_lab)
        if reason:
            pytest.skip(reason)
        attack = case.attack(attack_lab)
        control = case.control(control_lab)
        assert control.succeeded, f"the control failed, so the attack proves nothing: {control.detail}"
        assert not attack.succeeded, f"the attack succeeded: {attack.detail}"
        if "leaks" in attack.counts:  # the race ran, and the tool kept working through it
            assert attack.counts["leaks"] == 0 and attack.counts["normal"] > 0, attack.detail
    finally:
        attack_lab.close()
        control_lab.close()
