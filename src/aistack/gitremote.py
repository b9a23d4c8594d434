"""Git remotes a task may name instead of a repository on this host: which URLs are allowed, how
git authenticates to them, and how what they say is shown.

Credentials never travel in a task: a URL carrying them is refused. The service authenticates
the way git does: with RALPH_GIT_CREDENTIALS_FILE set, that file (git-credential-store's format,
`https://user:token@host` per line, e.g. a mounted secret) is git's only credential helper;
without it, git's own configuration of the service's user applies (its credential helpers, ssh
keys and agent). Every message of a remote is masked before anyone sees it: any userinfo in a
URL, and every password or token of the credentials file. `file://` remotes are confined like
local workspaces: a task could otherwise read any repository on the host.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from aistack.gitcli import GitError, confine_repository, run_git
from aistack.paths import PathNotAllowed, confine

SCHEMES = ("https", "http", "ssh", "git", "file")
RESOLVE_TIMEOUT_SECONDS = 20.0  # `ls-remote` at submission: the client waits for it
TRANSFER_TIMEOUT_SECONDS = 300.0  # a fetch or push in a task's run
MASK = "***"

# scp-like syntax, `user@host:path` (git takes it when no slash comes before the colon)
_SCP = re.compile(r"(?:[^@/:\s]+@)?[A-Za-z0-9][A-Za-z0-9.-]*:(?!//|:)[^\s]+")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_REF = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,255}(?<![./])")
# what git says on the way that says nothing about the failure
_NOISE = ("hint:", "To ", "From ")


class RemoteRefused(ValueError):
    """A repository or ref a task may not name, or that does not exist; `field` is the request's."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


class RemoteError(GitError):
    """A fetch, push or ls-remote failed: the remote's words, credentials masked. Transient: the
    remote may answer later."""


@dataclass(frozen=True)
class Remotes:
    credentials_file: Path | None  # git-credential-store's format; None: git's own configuration
    file_roots: tuple[Path, ...]  # where `file://` remotes may lie

    def check(self, url: str) -> Path | None:
        """Refuse a URL a task may not name (RemoteRefused); the local path of a `file://` one."""
        if any(ch <= " " or ch == "\x7f" for ch in url):
            raise RemoteRefused("repository must be a URL without spaces or control characters", "repository")
        if _SCP.fullmatch(url) and not url.startswith("-"):
            return None  # user@host:path goes to ssh; a user name there is no secret
        try:
            parts = urlsplit(url)
            _ = parts.port  # a bad port raises here
        except ValueError:
            parts = SplitResult("", "", "", "", "")
        if parts.scheme not in SCHEMES:
            raise RemoteRefused(f"repository must be a URL git fetches: {', '.join(SCHEMES)}, or user@host:path", "repository")
        if parts.password is not None or (parts.username is not None and parts.scheme != "ssh"):
            raise RemoteRefused(
                "repository must not carry credentials (userinfo@ in the URL): the service reads them from "
                "RALPH_GIT_CREDENTIALS_FILE or its git configuration", "repository",
            )  # fmt: skip
        if parts.scheme != "file":
            if not parts.hostname or f"{parts.username or ''}{parts.hostname}".startswith("-"):  # ssh would take it for an option
                raise RemoteRefused(f"repository {url[:80]} names no host (or one that starts with '-')", "repository")
            return None
        if parts.netloc not in ("", "localhost") or "?" in url or "#" in url:  # git reads ?… and #… as part of the path
            raise RemoteRefused("a file:// repository is a path on this host: file:///path (without ? or #)", "repository")
        try:
            return confine(unquote(parts.path), self.file_roots)
        except PathNotAllowed as exc:
            raise RemoteRefused(f"a file:// repository must lie inside WORKSPACE_ROOT or RALPH_REMOTE_FILE_ROOTS: {exc}",
                                "repository") from None  # fmt: skip

    async def resolve(self, url: str, ref: str | None) -> str:
        """The commit `ref` (a branch, then a tag; default the remote's HEAD) names on `url` now.
        RemoteRefused if the URL is not allowed, the remote cannot be reached, or it lacks the ref."""
        local = self.check(url)
        if ref is not None and not _REF.fullmatch(ref):
            raise RemoteRefused("ref must be a branch or tag name (letters, digits, . _ / -)", "ref")
        if local is not None:  # its .git may point out of the roots
            if not local.is_dir():
                raise RemoteRefused(f"repository {url[:80]} is not a git repository", "repository")
            try:
                await confine_repository(local, list(self.file_roots))
            except PathNotAllowed as exc:
                raise RemoteRefused(f"repository: {exc}", "repository") from None
            except GitError:
                raise RemoteRefused(f"repository {url[:80]} is not a git repository", "repository") from None
        names = ["HEAD"] if ref is None else [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}"]
        try:
            peeled = [f"{name}^{{}}" for name in names]  # what an annotated tag names (listed only when asked for)
            out = await self.git(Path("/"), "ls-remote", "--", url, *names, *peeled, timeout=RESOLVE_TIMEOUT_SECONDS)
        except RemoteError as exc:
            raise RemoteRefused(f"repository cannot be reached: {exc}", "repository") from None
        found = {name: commit for commit, _, name in (line.partition("\t") for line in out.splitlines())}
        for name in names:
            if commit := found.get(f"{name}^{{}}") or found.get(name):  # an annotated tag: the commit it names
                return commit
        if ref is None:
            raise RemoteRefused(f"repository {url[:80]} has no HEAD (no commits yet?); name a ref", "repository")
        raise RemoteRefused(f"repository {url[:80]} has no branch or tag {ref[:80]!r}", "ref")

    async def git(self, cwd: Path, *args: str, timeout: float = TRANSFER_TIMEOUT_SECONDS) -> str:
        """`git ARGS` against a remote: only the allowed protocols, the credentials file as the
        only helper (when set); stdout, or RemoteError with what git said, masked."""
        config = ["-c", "protocol.allow=never"]  # no ext::, fd:: or other transport a URL could name
        for scheme in SCHEMES:
            config += ["-c", f"protocol.{scheme}.allow=always"]
        if self.credentials_file is not None:
            config += ["-c", "credential.helper=", "-c", f"credential.helper=store --file={shlex.quote(str(self.credentials_file))}"]
        try:
            result = await run_git(cwd, *config, *args, timeout=timeout)
        except GitError as exc:  # it overran the time limit
            raise RemoteError(self.mask(str(exc))) from None
        if result.code != 0:
            lines = [line.strip() for line in (result.err or result.out).splitlines()]
            said = "; ".join(line for line in lines if line and not line.startswith(_NOISE)) or f"exit {result.code}"
            raise RemoteError(self.mask(f"git {args[0]}: {said}")[:600])  # masked first: a cut must not halve a secret
        return result.out

    def mask(self, text: str) -> str:
        """`text` without any URL's userinfo, nor any secret of the credentials file."""
        text = _USERINFO.sub(MASK + "@", text)
        for secret in self._secrets():
            text = text.replace(secret, MASK)
        return text

    def _secrets(self) -> list[str]:
        """The passwords (or tokens given as the user name) in the credentials file, longest first;
        read at each use, so a rotated secret is masked too."""
        if self.credentials_file is None:
            return []
        try:
            lines = self.credentials_file.read_text(errors="replace").splitlines()
        except OSError:
            return []
        secrets: set[str] = set()
        for line in lines:
            try:
                parts = urlsplit(line.strip())
            except ValueError:
                continue
            secret = parts.password if parts.password is not None else parts.username
            if secret and len(secret) >= 4:
                secrets.update({secret, unquote(secret)})
        return sorted(secrets, key=len, reverse=True)
