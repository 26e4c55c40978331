"""The rules a move reads from a spec, and their cache by the spec's bytes (`pipeline.spec.rules`).

Real git repositories and real files; the spec model validates every spec the cache has
not seen. Child processes show what a promotion's reads import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import SpecError
from pipeline.promote import moves, policy
from pipeline.settings import Settings
from pipeline.spec import model, rules
from pipeline.spec.rules import Rules
from tests.helpers import spec_yaml
from tests.minirepo import git

IMAGE = "team.task"
PATH = f"environments/{IMAGE}.yaml"
GPU = """\
cloud:
  machine_type: n1-standard-8
  accelerator: {type: nvidia-tesla-t4, count: 2}
promotion:
  production:
    signoffs: 3
"""


def _entries(state: Path) -> list[Path]:
    return sorted((state / rules.CACHE).glob("*.json"))


def test_the_rules_are_the_models_and_a_second_read_comes_from_the_cache(tmp_path: Path) -> None:
    text = spec_yaml(IMAGE, GPU).encode()
    expected = Rules(signoffs=3, accelerator="2 x NVIDIA_TESLA_T4")
    assert Rules.of(model.parse(text, PATH)) == expected
    assert rules.read(text, PATH, tmp_path) == expected
    [entry] = _entries(tmp_path)
    assert json.loads(entry.read_text()) == {"signoffs": 3, "accelerator": "2 x NVIDIA_TESLA_T4"}
    # a fresh process answers from the entry without loading the spec model (pydantic)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline.spec import rules\n"
        f"print(rules.read({text!r}, {PATH!r}, Path({str(tmp_path)!r})))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic' or m == 'pipeline.spec.model'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [repr(expected), "[]"]


def test_a_spec_that_does_not_validate_is_refused_every_time_and_never_kept(tmp_path: Path) -> None:
    for text in (
        b"image: team.task\n",
        b"image: [unclosed\n",
        spec_yaml(IMAGE, "cloud: {nope: 1}\n").encode(),
    ):
        for _ in range(2):
            with pytest.raises(SpecError):
                rules.read(text, PATH, tmp_path)
    assert _entries(tmp_path) == []


@pytest.mark.parametrize(
    "forged",
    [
        '{"signoffs": 0, "accelerator": null, "extra": 1}',
        '{"signoffs": -1, "accelerator": null}',
        '{"signoffs": 21, "accelerator": null}',
        '{"signoffs": true, "accelerator": null}',
        '{"signoffs": "3", "accelerator": null}',
        '{"signoffs": 0, "accelerator": 7}',
        "[0, null]",
        "not json",
        "",
    ],
)
def test_an_entry_envctl_would_not_write_is_ignored_and_written_again(tmp_path: Path, forged: str) -> None:
    text = spec_yaml(IMAGE, GPU).encode()
    rules.read(text, PATH, tmp_path)
    [entry] = _entries(tmp_path)
    entry.write_text(forged)
    assert rules.read(text, PATH, tmp_path) == Rules(signoffs=3, accelerator="2 x NVIDIA_TESLA_T4")
    assert json.loads(entry.read_text()) == {"signoffs": 3, "accelerator": "2 x NVIDIA_TESLA_T4"}


def test_the_key_is_the_bytes_the_path_and_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = spec_yaml(IMAGE, GPU).encode()
    rules.read(text, PATH, tmp_path)
    rules.read(text + b"\n", PATH, tmp_path)  # other bytes, same meaning: another entry
    rules.read(text, "environments/team.other.yaml", tmp_path)
    assert len(_entries(tmp_path)) == 3
    # entries of another model's source are not read: a changed model validates again
    for entry in _entries(tmp_path):
        entry.write_text('{"signoffs": 0, "accelerator": null}')  # what an older model might have said
    monkeypatch.setattr(rules, "_fingerprint", "another model")
    assert rules.read(text, PATH, tmp_path) == Rules(signoffs=3, accelerator="2 x NVIDIA_TESLA_T4")
    assert len(_entries(tmp_path)) == 4


def test_a_cache_that_can_not_be_written_costs_only_time(tmp_path: Path) -> None:
    (tmp_path / rules.CACHE).write_text("a file where the folder would be")
    text = spec_yaml(IMAGE, GPU).encode()
    assert rules.read(text, PATH, tmp_path).signoffs == 3
    assert rules.read(text, PATH, None).signoffs == 3
    assert not list(tmp_path.glob(".tmp-*")) and (tmp_path / rules.CACHE).is_file()


def test_the_rules_of_a_commit_come_from_the_cache_in_the_state_folder(tmp_path: Path) -> None:
    repo, state = tmp_path / "repo", tmp_path / "state"
    (repo / "environments").mkdir(parents=True)
    (repo / PATH).write_text(spec_yaml(IMAGE, GPU))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "gpu")
    sha = git(repo, "rev-parse", "HEAD")
    settings = Settings(repo=repo, state_dir=state)
    assert policy.rules_at(settings, IMAGE, sha) == Rules(signoffs=3, accelerator="2 x NVIDIA_TESLA_T4")
    assert len(_entries(state)) == 1
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from pipeline.promote import moves, policy\n"
        "from pipeline.settings import Settings\n"
        f"settings = Settings(repo=Path({str(repo)!r}), state_dir=Path({str(state)!r}))\n"
        f"print(moves._rule_at(settings, {IMAGE!r}, {sha!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["3", "[]"]
    # a Settings whose state folder is relative (not resolved by the loader) keeps nothing beside the cwd
    relative = Settings(repo=repo, state_dir=Path("relative-state"))
    assert moves._rule_at(relative, IMAGE, sha) == 3
    assert not Path("relative-state").exists()
