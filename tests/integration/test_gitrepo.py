"""VersionsRepo against real git repositories: a bare repository in tmp_path is the remote."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.adapters import gitrepo
from shared.adapters.gitrepo import VersionsRepo
from shared.config import Settings
from shared.errors import InvalidInput, TransientError, UpstreamError

pytestmark = pytest.mark.timeout(60)

TOKEN = "tok-Zq8xF4-never-shown-7731"
FILE = "versions/awscli.json"
REAL_GIT = shutil.which("git") or "git"


def git(*args: str, cwd: Path | None = None) -> str:
    """The test's own git: fixed identity, nothing from the module under test."""
    done = subprocess.run(
        [REAL_GIT, "-c", "user.name=tester", "-c", "user.email=t@example.com", *args],
        cwd=cwd, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def _no_freshen_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FRESHEN_") or name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
            monkeypatch.delenv(name)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    git("init", "-q", "--bare", "-b", "main", str(path))
    return path


def make_repo(url: str, workdir: Path, token: str | None = TOKEN) -> VersionsRepo:
    settings = Settings(
        git_url=url,
        git_workdir=workdir,
        git_token=SecretStr(token) if token else None,
        git_author="freshen bot <bot@example.com>",
    )
    return VersionsRepo(settings)


def on_remote(remote: Path, *args: str) -> str:
    return git("--git-dir", str(remote), *args)


def run_commits(remote: Path, run_id: str) -> list[str]:
    found = on_remote(remote, "log", "--format=%H", f"--grep=Freshen-Run: {run_id}", "main")
    return found.split()


def test_publish_to_empty_remote_creates_branch_and_tag(remote: Path, tmp_path: Path) -> None:
    repo = make_repo(remote.as_uri(), tmp_path / "wd")
    assert repo.head() is None
    sha = repo.publish("a1b2c3", {FILE: '{"awscli": "1.0.0"}\n'}, "awscli-1.0.0", "awscli 1.0.0")
    assert on_remote(remote, "rev-parse", "refs/heads/main") == sha
    assert on_remote(remote, "rev-parse", "awscli-1.0.0^{commit}") == sha
    assert on_remote(remote, "show", f"{sha}:{FILE}") == '{"awscli": "1.0.0"}'
    assert on_remote(remote, "log", "-1", "--format=%an <%ae>|%cn|%s", sha) == (
        "freshen bot <bot@example.com>|freshen bot|awscli 1.0.0"
    )
    trailer = on_remote(remote, "log", "-1", "--format=%(trailers:key=Freshen-Run)", sha)
    assert trailer == "Freshen-Run: a1b2c3"
    assert repo.head() == sha
    assert TOKEN not in (tmp_path / "wd" / ".git" / "config").read_text()


def test_publish_twice_gives_one_commit_and_one_tag(remote: Path, tmp_path: Path) -> None:
    repo = make_repo(remote.as_uri(), tmp_path / "wd")
    files = {FILE: "1.0.0\n"}
    first = repo.publish("run1", files, "v1.0.0", "awscli 1.0.0")
    refs_before = on_remote(remote, "show-ref")
    assert repo.publish("run1", files, "v1.0.0", "awscli 1.0.0") == first
    other_worker = make_repo(remote.as_uri(), tmp_path / "wd2")
    assert other_worker.publish("run1", files, "v1.0.0", "awscli 1.0.0") == first
    assert on_remote(remote, "show-ref") == refs_before
    assert run_commits(remote, "run1") == [first]
    assert on_remote(remote, "tag", "-l") == "v1.0.0"


def test_second_run_commits_on_top_and_keeps_other_files(remote: Path, tmp_path: Path) -> None:
    repo = make_repo(remote.as_uri(), tmp_path / "wd")
    first = repo.publish("run1", {FILE: "1.0.0\n"}, "v1.0.0", "awscli 1.0.0")
    second = repo.publish("run2", {"versions/other.txt": "x\n"}, "v1.0.1", "other 1")
    assert second != first
    assert on_remote(remote, "rev-parse", f"{second}^") == first
    assert on_remote(remote, "show", f"main:{FILE}") == "1.0.0"
    assert on_remote(remote, "log", "--format=%H", "main", "--", FILE) == first
    third = repo.publish("run3", {FILE: "1.0.2\n"}, "v1.0.2", "awscli 1.0.2")
    assert on_remote(remote, "log", "--format=%H", "main", "--", FILE).split() == [third, first]
    assert on_remote(remote, "rev-parse", "v1.0.1^{commit}") == second
    assert on_remote(remote, "show", "main:versions/other.txt") == "x"


def test_commit_left_by_a_crash_before_push_is_reused(remote: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    repo = make_repo(remote.as_uri(), workdir)
    first = repo.publish("run1", {FILE: "1.0.0\n"}, "v1.0.0", "awscli 1.0.0")
    (workdir / FILE).write_text("2.0.0\n")
    git("add", FILE, cwd=workdir)
    git("commit", "-q", "-m", "awscli 2.0.0\n\nFreshen-Run: run2", cwd=workdir)
    crashed = git("rev-parse", "HEAD", cwd=workdir)
    assert repo.publish("run2", {FILE: "2.0.0\n"}, "v2.0.0", "awscli 2.0.0") == crashed
    assert on_remote(remote, "rev-parse", "main") == crashed
    assert on_remote(remote, "rev-parse", f"{crashed}^") == first
    assert on_remote(remote, "rev-parse", "v2.0.0^{commit}") == crashed
    assert run_commits(remote, "run2") == [crashed]


def test_lock_files_left_by_a_killed_git_are_cleared(remote: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    repo = make_repo(remote.as_uri(), workdir)
    repo.publish("run1", {FILE: "1.0.0\n"}, "v1.0.0", "awscli 1.0.0")
    for stale in ("index.lock", "config.lock", "refs/heads/main.lock"):
        (workdir / ".git" / stale).write_text("")
    sha = repo.publish("run2", {FILE: "2.0.0\n"}, "v2.0.0", "awscli 2.0.0")
    assert on_remote(remote, "rev-parse", "main") == sha


def test_commit_pushed_without_its_tag_gets_tagged(remote: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    repo = make_repo(remote.as_uri(), workdir)
    repo.publish("run1", {FILE: "1.0.0\n"}, "v1.0.0", "awscli 1.0.0")
    (workdir / FILE).write_text("2.0.0\n")
    git("commit", "-q", "-am", "awscli 2.0.0\n\nFreshen-Run: run2", cwd=workdir)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=workdir)
    pushed = git("rev-parse", "HEAD", cwd=workdir)
    assert repo.publish("run2", {FILE: "2.0.0\n"}, "v2.0.0", "awscli 2.0.0") == pushed
    assert on_remote(remote, "rev-parse", "main") == pushed
    assert on_remote(remote, "rev-parse", "v2.0.0^{commit}") == pushed


def test_stale_crash_commit_is_redone_on_the_moved_branch(remote: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    repo = make_repo(remote.as_uri(), workdir)
    repo.publish("run1", {FILE: "1.0.0\n"}, "v1.0.0", "awscli 1.0.0")
    git("commit", "-q", "--allow-empty", "-m", "x\n\nFreshen-Run: run2", cwd=workdir)
    stale = git("rev-parse", "HEAD", cwd=workdir)
    other = push_from_other_clone(remote, tmp_path / "other")
    sha = repo.publish("run2", {FILE: "2.0.0\n"}, "v2.0.0", "awscli 2.0.0")
    assert sha != stale
    assert on_remote(remote, "rev-parse", f"{sha}^") == other
    assert run_commits(remote, "run2") == [sha]


def push_from_other_clone(remote: Path, clone: Path) -> str:
    git("clone", "-q", remote.as_uri(), str(clone))
    (clone / "README").write_text("another writer\n")
    git("add", "README", cwd=clone)
    git("commit", "-q", "-m", "another writer", cwd=clone)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone)


def test_a_tracked_symlink_cannot_redirect_the_write(remote: Path, tmp_path: Path) -> None:
    repo = make_repo(remote.as_uri(), tmp_path / "wd")
    repo.publish("run1", {"README": "hi\n"}, "v1", "first")
    outside, clone = tmp_path / "outside", tmp_path / "other"
    outside.mkdir()
    git("clone", "-q", remote.as_uri(), str(clone))
    (clone / "versions").symlink_to(outside)
    git("add", "versions", cwd=clone)
    git("commit", "-q", "-m", "symlink", cwd=clone)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=clone)
    with pytest.raises(UpstreamError, match="outside the clone"):
        repo.publish("run2", {FILE: "2\n"}, "v2", "second")
    assert list(outside.iterdir()) == []


def test_branch_moving_between_fetch_and_push_is_retried(
    remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(remote.as_uri(), tmp_path / "wd")
    first = repo.publish("run1", {FILE: "1.0.0\n"}, "v1.0.0", "awscli 1.0.0")
    other, fired = tmp_path / "other", tmp_path / "fired"
    git("clone", "-q", remote.as_uri(), str(other))
    # A git on PATH that lets another clone push just before the module's first push.
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f"""#!/bin/sh
case " $* " in *" push "*) if [ ! -e '{fired}' ]; then : > '{fired}'
  '{REAL_GIT}' -C '{other}' commit -q --allow-empty -m 'another writer' || exit 97
  '{REAL_GIT}' -C '{other}' push -q origin HEAD:refs/heads/main || exit 98
fi ;; esac
exec '{REAL_GIT}' "$@"
"""
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    sha = repo.publish("run2", {FILE: "2.0.0\n"}, "v2.0.0", "awscli 2.0.0")
    assert fired.exists()
    moved = git("rev-parse", "HEAD", cwd=other)
    assert on_remote(remote, "rev-parse", "main") == sha
    assert on_remote(remote, "rev-list", "--format=%s", "--no-commit-header", "main").split(
        "\n"
    ) == ["awscli 2.0.0", "another writer", "awscli 1.0.0"]
    assert on_remote(remote, "rev-parse", f"{sha}^", f"{moved}^") == f"{moved}\n{first}"
    assert run_commits(remote, "run2") == [sha]
    assert on_remote(remote, "tag", "-l").split() == ["v1.0.0", "v2.0.0"]


def test_concurrent_publishers_all_land(remote: Path, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def publish(n: int) -> None:
        try:
            repo = make_repo(remote.as_uri(), tmp_path / f"wd{n % 2}")
            repo.publish(f"run{n}", {f"versions/{n}.txt": f"{n}\n"}, f"v{n}", f"run {n}")
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert errors == []
    assert on_remote(remote, "tag", "-l").split() == ["v0", "v1", "v2", "v3"]
    assert len(on_remote(remote, "rev-list", "main").split()) == 4
    for n in range(4):
        assert on_remote(remote, "show", f"main:versions/{n}.txt") == str(n)
        assert len(run_commits(remote, f"run{n}")) == 1


@pytest.mark.parametrize("tag", ["a b", "../x", "x\n", "x..y", "x.lock", "", "-x"])
def test_invalid_tag_is_rejected_before_git_touches_anything(
    remote: Path, tmp_path: Path, tag: str
) -> None:
    repo = make_repo(remote.as_uri(), tmp_path / "wd")
    with pytest.raises(InvalidInput):
        repo.publish("run1", {FILE: "1\n"}, tag, "msg")
    assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "/etc/passwd", "a/../../b", "a\nb", ".git/config", "a//b", ""]
)
def test_invalid_path_is_rejected_before_git_touches_anything(
    remote: Path, tmp_path: Path, path: str
) -> None:
    repo = make_repo(remote.as_uri(), tmp_path / "wd")
    with pytest.raises(InvalidInput):
        repo.publish("run1", {path: "1\n"}, "v1", "msg")
    assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("run_id", ["", "a b", "x\nFreshen-Run: y", "../x"])
def test_invalid_run_id_is_rejected(remote: Path, tmp_path: Path, run_id: str) -> None:
    repo = make_repo(remote.as_uri(), tmp_path / "wd")
    with pytest.raises(InvalidInput):
        repo.publish(run_id, {FILE: "1\n"}, "v1", "msg")
    assert not (tmp_path / "wd").exists()


def test_unreachable_remote_is_transient_and_keeps_the_token_secret(tmp_path: Path) -> None:
    repo = make_repo("http://127.0.0.1:9/x.git", tmp_path / "wd")
    with pytest.raises(TransientError) as raised:
        repo.publish("run1", {FILE: "1\n"}, "v1", "msg")
    assert "127.0.0.1:9" in str(raised.value)
    assert TOKEN not in str(raised.value)
    assert TOKEN not in (tmp_path / "wd" / ".git" / "config").read_text()


class _Demands401(BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def auth_server() -> Iterator[tuple[int, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Demands401,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_token_reaches_git_only_through_askpass(
    auth_server: tuple[int, list[str]], tmp_path: Path
) -> None:
    port, seen = auth_server
    repo = make_repo(f"http://deploy@127.0.0.1:{port}/x.git", tmp_path / "wd")
    with pytest.raises(UpstreamError) as raised:
        repo.publish("run1", {FILE: "1\n"}, "v1", "msg")
    sent = [base64.b64decode(h.removeprefix("Basic ")).decode() for h in seen if h]
    assert sent[-1] == f"deploy:{TOKEN}"  # curl may first try the URL's user with no password
    assert set(sent) <= {"deploy:", f"deploy:{TOKEN}"}
    message = str(raised.value)
    assert f"http://127.0.0.1:{port}/x.git" in message
    assert TOKEN not in message
    assert "deploy@" not in message
    assert TOKEN not in (tmp_path / "wd" / ".git" / "config").read_text()


def test_without_userinfo_askpass_supplies_a_username(
    auth_server: tuple[int, list[str]], tmp_path: Path
) -> None:
    port, seen = auth_server
    repo = make_repo(f"http://127.0.0.1:{port}/x.git", tmp_path / "wd")
    with pytest.raises(UpstreamError):
        repo.head()
    sent = [base64.b64decode(h.removeprefix("Basic ")).decode() for h in seen if h]
    assert sent == [f"x-access-token:{TOKEN}"]


def test_a_hung_remote_times_out_as_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitrepo, "GIT_TIMEOUT_S", 2.0)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        repo = make_repo(f"http://127.0.0.1:{silent.getsockname()[1]}/x.git", tmp_path / "wd")
        with pytest.raises(TransientError, match="timed out"):
            repo.head()
