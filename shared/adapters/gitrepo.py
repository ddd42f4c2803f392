"""The one module that runs git: commit the versions file and tag it on the remote, idempotently.

A run's commit carries the trailer `Freshen-Run: <run id>` and the push of branch and tag is atomic,
so a re-run finds its own work (the tag on the remote, or a commit made before a crash) instead of
committing twice. The token reaches git only through an askpass script reading an environment
variable of the git process: never argv, the remote URL, .git/config, logs or exception text.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from shared.config import Settings
from shared.errors import ConfigError, InvalidInput, TransientError, UpstreamError
from shared.model import validate

RUN_TRAILER = "Freshen-Run"
GIT_TIMEOUT_S = 120.0
"""Longest any one git command may run; a hung remote becomes a TransientError."""
PUBLISH_ATTEMPTS = 5
"""Fetch-commit-push rounds before giving up on a branch other writers keep moving."""
LOCK_TIMEOUT_S = 600.0
"""Longest wait for another process publishing from the same clone."""
STDERR_TAIL_LINES = 6

_TOKEN_VAR = "FRESHEN_GIT_ASKPASS_TOKEN"
# git asks for a username (unless the URL has one) and then a password; the token is the password.
_ASKPASS_SCRIPT = f"""#!/bin/sh
case "$1" in
  [Uu]sername*) printf '%s\\n' x-access-token ;;
  *) printf '%s\\n' "${_TOKEN_VAR}" ;;
esac
"""
_RUN_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_AUTHOR = re.compile(r"([^<>\x00-\x1f]+?)\s*<([^<>\s]+)>")
_USERINFO = re.compile(r"(://)[^/@\s]*@")
# Inherited GIT_* variables are dropped (a GIT_DIR would redirect every command) except these.
_KEPT_GIT_VARS = ("GIT_SSL_", "GIT_SSH", "GIT_PROXY_")
# Identity, signing, hooks and credential helpers come from here, never from the user's config.
_GIT_OPTIONS = (
    "-c", "core.hooksPath=/dev/null", "-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false",
    "-c", "gc.autoDetach=false", "-c", "advice.detachedHead=false",
)  # fmt: skip
_NETWORK_HINTS = (
    "could not read from remote", "connection refused", "timed out", "could not resolve",
    "failed to connect", "couldn't connect", "connection reset", "remote end hung up",
    "early eof", "temporary failure", "network is unreachable", "returned error: 5",
    "rpc failed", "operation too slow", "no route to host",
)  # fmt: skip
# With a token we own the credentials: no helper may supply others or store ours.
_OWN_CREDENTIALS = ("-c", "credential.helper=")
# A push lost a race with another writer (client-side check or the remote's ref lock): redo.
_LOST_RACE = ("[rejected]", "failed to update ref", "cannot lock ref", "failed to lock")


class VersionsRepo:
    """A local clone of the versions repository that publishes one commit + tag per run."""

    def __init__(self, settings: Settings, workdir: Path | None = None) -> None:
        if not settings.git_url:
            raise ConfigError("FRESHEN_GIT_URL is not set: set it, or skip the versions commit")
        match = _AUTHOR.fullmatch(settings.git_author.strip())
        if match is None:
            raise ConfigError("FRESHEN_GIT_AUTHOR must look like 'name <email>'")
        self._url = settings.git_url
        self._remote = _USERINFO.sub(r"\1", settings.git_url)
        self._branch = settings.git_branch
        self._token = settings.git_token.get_secret_value() if settings.git_token else ""
        self._workdir = (workdir or settings.git_workdir).absolute()
        self._askpass = self._workdir / ".git" / "freshen-askpass"
        self._identity = {
            f"GIT_{role}_{part}": value
            for role in ("AUTHOR", "COMMITTER")
            for part, value in (("NAME", match[1]), ("EMAIL", match[2]))
        }

    def publish(self, run_id: str, files: Mapping[str, str], tag: str, message: str) -> str:
        """Have the remote branch hold a commit with `files` and `tag` on it; return its sha."""
        run_id, tag = _checked_run_id(run_id), self._checked_tag(tag)
        files, message = _checked_files(files), _checked_message(message)
        with self._locked():
            self._ensure_clone()
            for _ in range(PUBLISH_ATTEMPTS):
                sha = self._attempt(run_id, files, tag, message)
                if sha is not None:
                    return sha
        raise TransientError(
            f"git push to {self._remote}: branch {self._branch} kept moving under other writers "
            f"({PUBLISH_ATTEMPTS} attempts); the promote task retries later"
        )

    def head(self) -> str | None:
        """The sha the remote branch points at now (asks the remote), None if it has none."""
        with self._locked():
            self._ensure_clone()
            return self._remote_refs(None).get(f"refs/heads/{self._branch}")

    def _attempt(self, run_id: str, files: Mapping[str, str], tag: str, message: str) -> str | None:
        """One fetch-commit-push round; None when another writer won the race."""
        refs = self._remote_refs(tag)
        tagged = refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")
        if tagged:
            return tagged
        base = self._fetch(refs.get(f"refs/heads/{self._branch}"))
        tracking = f"refs/remotes/origin/{self._branch}"
        if base and (pushed := self._find_run(run_id, [tracking])):
            return pushed if self._push(pushed, tag, message, lease=None) else None
        commit = self._find_unpushed(run_id, base) or self._commit(base, files, message, run_id)
        return commit if self._push(commit, tag, message, lease=base or "") else None

    def _fetch(self, remote_sha: str | None) -> str | None:
        """Update the tracking ref to the remote branch; None when the remote has no such branch."""
        tracking = f"refs/remotes/origin/{self._branch}"
        if remote_sha is None:
            self._git("update-ref", "-d", tracking)
            return None
        self._git("fetch", "-q", "--no-tags", "origin", f"+refs/heads/{self._branch}:{tracking}")
        return self._git("rev-parse", "--verify", f"{tracking}^{{commit}}").strip()

    def _find_run(self, run_id: str, revisions: list[str]) -> str | None:
        """The newest commit among `revisions` whose Freshen-Run trailer is `run_id`."""
        listing = self._git(
            "log", "-F", f"--grep={RUN_TRAILER}: {run_id}",
            f"--format=%H %(trailers:key={RUN_TRAILER},valueonly,separator=%x20)",
            *revisions, "--",
        )  # fmt: skip
        for line in listing.splitlines():
            sha, _, values = line.partition(" ")
            if run_id in values.split():
                return sha
        return None

    def _find_unpushed(self, run_id: str, base: str | None) -> str | None:
        """A commit of this run left by an attempt that died before pushing, if it fits on base."""
        local = f"refs/heads/{self._branch}"
        if not self._git("for-each-ref", local).strip():
            return None
        exclude = [f"^refs/remotes/origin/{self._branch}"] if base else []
        found = self._find_run(run_id, [local, *exclude])
        if found is None or self._git("log", "-1", "--format=%P", found).strip() != (base or ""):
            return None
        return found

    def _commit(self, base: str | None, files: Mapping[str, str], message: str, run_id: str) -> str:
        """Reset the clone to `base` (an empty branch when None), write files and commit them."""
        self._git("symbolic-ref", "HEAD", f"refs/heads/{self._branch}")
        if base:
            self._git("reset", "-q", "--hard", base)
        else:
            self._git("update-ref", "-d", f"refs/heads/{self._branch}")
            self._git("read-tree", "--empty")
        self._git("clean", "-q", "-ffdx")
        for path, text in files.items():
            self._write(path, text)
        self._git("add", "-f", "--", *files)
        body = f"{message}\n\n{RUN_TRAILER}: {run_id}\n"
        self._git("commit", "-q", "--allow-empty", "--no-verify", "--cleanup=whitespace", "-F", "-",
                  stdin=body)  # fmt: skip
        return self._git("rev-parse", "--verify", "HEAD").strip()

    def _write(self, path: str, text: str) -> None:
        root = self._workdir.resolve()
        target = root / path
        # A tracked symlink must not let the write land outside the clone.
        if not target.parent.resolve().is_relative_to(root):
            raise UpstreamError(f"{path!r} leads outside the clone {root}: fix the repository")
        if target.is_symlink():
            target.unlink()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="")
        except OSError as exc:
            raise UpstreamError(f"cannot write {path!r} in {root}: {exc.strerror}") from None

    def _push(self, commit: str, tag: str, message: str, lease: str | None) -> bool:
        """Tag `commit`, push the tag (and the branch unless lease is None); False: lost a race."""
        self._git("tag", "-f", "-a", "-F", "-", tag, commit, stdin=f"{message}\n")
        refspecs = [f"refs/tags/{tag}:refs/tags/{tag}"]
        options = ["--porcelain", "--no-verify"]
        if lease is not None:
            refspecs.insert(0, f"{commit}:refs/heads/{self._branch}")
            options += ["--atomic", f"--force-with-lease=refs/heads/{self._branch}:{lease}"]
        code, out, err = self._run("push", ["push", *options, "origin", *refspecs])
        if code == 0:
            return True
        if any(hint in out + err for hint in _LOST_RACE):
            return False
        raise self._error("push", code, err + out)

    def _remote_refs(self, tag: str | None) -> dict[str, str]:
        patterns = [f"refs/heads/{self._branch}"]
        if tag is not None:
            patterns += [f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}"]
        listing = self._git("ls-remote", "origin", *patterns)
        refs = (line.split("\t", 1) for line in listing.splitlines() if "\t" in line)
        return {name: sha for sha, name in refs if name in patterns}

    def _ensure_clone(self) -> None:
        """Create the clone on first use; point origin at the configured URL; write askpass."""
        git_dir = self._workdir / ".git"
        if not git_dir.is_dir():
            if self._workdir.exists() and any(self._workdir.iterdir()):
                raise ConfigError(f"{self._workdir} is not empty and not a git clone: pick another")
            self._workdir.mkdir(parents=True, exist_ok=True)
            self._git("init", "-q", "-b", self._branch)
        # Our timeouts SIGKILL git; under our flock any lock file it left behind is stale.
        names = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock")
        for stale in [*(git_dir / name for name in names), *git_dir.glob("refs/**/*.lock")]:
            stale.unlink(missing_ok=True)
        self._git("config", "remote.origin.url", self._url)
        if not self._askpass.exists():
            self._askpass.write_text(_ASKPASS_SCRIPT, encoding="utf-8")
            self._askpass.chmod(0o700)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One publisher per clone at a time, across processes (workers share the volume)."""
        lock = self._workdir.parent / f".{self._workdir.name}.freshen-lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        with lock.open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TransientError(f"git clone {self._workdir} stayed busy") from None
                    time.sleep(0.2)
            yield

    def _checked_tag(self, tag: str) -> str:
        validate.tag(tag)
        code, _, _ = self._run("check-ref-format", ["check-ref-format", f"refs/tags/{tag}"])
        if code != 0:
            raise InvalidInput(f"invalid git tag: {tag!r}")
        return tag

    def _git(self, *args: str, stdin: str | None = None) -> str:
        code, out, err = self._run(args[0], list(args), stdin)
        if code != 0:
            raise self._error(args[0], code, err)
        return out

    def _run(self, op: str, args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
        """Run git with a bounded time; kill its whole process group (helpers too) on timeout."""
        cwd = self._workdir if self._workdir.is_dir() else None
        with subprocess.Popen(
            ["git", *_GIT_OPTIONS, *(_OWN_CREDENTIALS if self._token else ()), *args],
            cwd=cwd, env=self._env(), text=True, encoding="utf-8", errors="replace",
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        ) as proc:  # fmt: skip
            try:
                out, err = proc.communicate(stdin, timeout=GIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise TransientError(
                    f"git {op} ({self._remote}) timed out after {GIT_TIMEOUT_S:.0f} s"
                ) from None
        return proc.returncode, out, err

    def _env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("GIT_") or k.startswith(_KEPT_GIT_VARS)
        }  # fmt: skip
        env.update(self._identity, GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
        env.pop(_TOKEN_VAR, None)
        if self._token:
            env.update({"GIT_ASKPASS": str(self._askpass), _TOKEN_VAR: self._token})
        return env

    def _error(self, op: str, code: int, stderr: str) -> TransientError | UpstreamError:
        """The error for a failed git command; its stderr tail is scrubbed of token and userinfo."""
        tail = "\n".join(stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        if self._token:
            tail = tail.replace(self._token, "***")
        tail = _USERINFO.sub(r"\1", tail)
        text = f"git {op} ({self._remote}) failed with exit code {code}: {tail or 'no output'}"
        if any(hint in tail.lower() for hint in _NETWORK_HINTS):
            return TransientError(f"{text}; retrying later")
        return UpstreamError(f"{text}; check the repository, branch and token settings")


def _checked_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise InvalidInput(f"invalid run id: {run_id!r:.80}")
    return run_id


def _checked_files(files: Mapping[str, str]) -> dict[str, str]:
    """Relative paths inside the clone: no '..', '.', '.git', absolute path or control character."""
    if not files:
        raise InvalidInput("no files to publish")
    for path, text in files.items():
        if (
            not isinstance(path, str)
            or not isinstance(text, str)
            or len(path) > 255
            or any(part in ("", ".", "..") or part.lower() == ".git" for part in path.split("/"))
            or any(ord(char) < 0x20 or char in "\x7f\\" for char in path)
        ):
            raise InvalidInput(f"invalid file path for the versions repository: {path!r:.80}")
    return dict(files)


def _checked_message(message: str) -> str:
    if not isinstance(message, str) or not message.strip() or "\x00" in message:
        raise InvalidInput("the commit message must be non-empty text")
    return message.strip()
