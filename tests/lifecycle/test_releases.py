"""Release snapshots and the current/previous bookkeeping (pure file logic)."""

from __future__ import annotations

from pathlib import Path

from aistack.config import Settings
from aistack.lifecycle.releases import INSTALLED, KEEP_RELEASES, Releases


def tree(root: Path, text: str) -> Path:
    (root / "aistack").mkdir(parents=True)
    (root / "aistack" / "__init__.py").write_text(text)
    (root / "aistack" / "__pycache__").mkdir()
    (root / "aistack" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    return root


def test_build_copies_the_package_read_only_without_caches(tmp_path):
    releases = Releases(Settings(_env_file=None, aistack_data_dir=tmp_path / "data"))
    version = releases.build("ralph-wiggum", tree(tmp_path / "src", "VALUE = 1\n"))
    release = releases.dir("ralph-wiggum", version)
    assert (release / "aistack" / "__init__.py").read_text() == "VALUE = 1\n"
    assert not (release / "aistack" / "__pycache__").exists()
    assert (release / "aistack" / "__init__.py").stat().st_mode & 0o222 == 0
    assert releases.exists("ralph-wiggum", version) and releases.exists("ralph-wiggum", INSTALLED)
    # the same tree again is a distinct release with the same content hash
    again = releases.build("ralph-wiggum", tmp_path / "src")
    assert again != version and again.split(".")[0].rsplit("-", 1)[1] == version.rsplit("-", 1)[1]


def test_promote_step_back_and_prune(tmp_path):
    releases = Releases(Settings(_env_file=None, aistack_data_dir=tmp_path / "data"))
    versions = [releases.build("dashboard", tree(tmp_path / f"src{i}", f"V = {i}\n")) for i in range(KEEP_RELEASES + 2)]

    assert releases.promote("dashboard", versions[0], INSTALLED) == []
    state = releases.state("dashboard")
    assert state.current == versions[0] and state.previous == INSTALLED

    pruned = []
    for v in versions[1:]:
        pruned += releases.promote("dashboard", v, "ignored once there is history")
    state = releases.state("dashboard")
    assert state.current == versions[-1] and len(state.stack) == KEEP_RELEASES
    assert pruned == [INSTALLED, versions[0], versions[1]]
    assert not releases.dir("dashboard", versions[0]).exists()  # pruned from disk too

    releases.step_back("dashboard")
    state = releases.state("dashboard")
    assert state.current == versions[-2] and state.previous == versions[-3]
    assert not releases.dir("dashboard", versions[-1]).exists()


def test_a_corrupt_state_file_means_installed(tmp_path):
    releases = Releases(Settings(_env_file=None, aistack_data_dir=tmp_path / "data"))
    path = tmp_path / "data" / "releases" / "process" / "llama-cpp" / "state.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert releases.state("llama-cpp").current == INSTALLED and releases.state("llama-cpp").previous is None
