"""Skills: functions the agent wrote, promoted to tools and hot-loaded from ``workspace/skills/``.

- :mod:`tool.skills.validate` / :mod:`tool.skills.schema`: the static checks (syntax tree only);
- :mod:`tool.skills.files`: the skill files, their header, the manifest and kept versions;
- :mod:`tool.skills.runner` (+ ``runner_main.py`` inside the sandbox): one sandboxed process per call;
- :mod:`tool.skills.loader`: the provider the registry asks before every model call;
- :mod:`tool.skills.promote`: the ``promote_skill`` tool.

``docts/skills.md`` describes the whole flow.
"""

from tool.skills.files import SkillStore
from tool.skills.loader import SkillLoader
from tool.skills.promote import promote_skill_tool
from tool.skills.runner import SkillRunner
from tool.skills.schema import SkillInvalid

__all__ = ["SkillInvalid", "SkillLoader", "SkillRunner", "SkillStore", "promote_skill_tool"]
