# the answer is checked by answer_contains in task.toml
