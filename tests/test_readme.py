"""Every block of README.md runs as written (issue 12, section 3).

How each fenced block is run is decided by its language and by an annotation on the
line before it (``<!-- readme-test: ... -->``):

- ``sh`` (no annotation): a *session*. Its commands are typed one by one into one
  ``bash`` (exports and background jobs carry over, as in a terminal) in a fresh
  folder holding what the clone provides that the README names (``certs/fixtures/``,
  ``docs/trisa.conf``), with ``.venv/bin`` first on PATH and a fresh HOME. Every
  foreground command must exit 0 without a traceback. After a command ending in ``&``
  the harness waits until its ``--listen``/``--addr`` port accepts connections (what a
  reader does by waiting for the "listening" line); at the end the background jobs
  are stopped with SIGTERM and waited for.
- ``sh`` + ``terminal``: the commands of a first terminal, whose last one runs until
  Ctrl-C; the block after it runs beside it (a second terminal, same folder) and the
  first is then interrupted.
- ``python`` (no annotation): a standalone script in a fresh folder. ``python, beside
  "SECTION"``: a script run in the folder of that section's session while its
  background servers still run.
- ``python`` + ``pytest``: a test module alone in a fresh folder, run by pytest (the
  installed plugin provides ``trisa_network``).
- ``deny-list``: parsed as a deny-list file.
- ``skip (reason)``: not run; the list of such blocks is pinned in ``SKIPPED`` so that a
  new block cannot escape silently.

What is substituted, and nothing else: the README's ports (``PORTS``) by free ones
(also in the clone's configuration files that name them, ``PORTED_FILES``); the
PostgreSQL databases the README creates (``DATABASES``, like ports a resource of the
machine) by names of this run's own, dropped at the end;
the placeholders (``VASP_ID``, ``TOKEN``, ``PKCS12_PASSWORD``, ``SERIAL``) by the value
an earlier command printed, found where the README says it comes from
(``PLACEHOLDER_SOURCES``); and the answer the README tells the reader to type
(``# password: X``) is given to that command as its typed input. Each command holding
a placeholder is first run with the placeholder itself, which must fail with exit 1
and one line naming what to put there (the failing twin).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import ROOT

from trisa_peer.cli.placeholders import PLACEHOLDERS
from trisa_peer.denylist import parse_deny_list

README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the venv's console scripts
PORTS = (4000, 4001, 4002, 4433, 8080, 8443, 8831, 9464)
_PORT = re.compile(r"(?<=:)(%s)(?!\d)" % "|".join(map(str, PORTS)))  # noqa: UP031
_ANNOTATION = re.compile(r"^<!-- readme-test: (.+) -->$")
_NOT_INHERITED = ("SECTIGO_", "TRISA_PEER_", "PYTEST_", "HTTP_PROXY", "HTTPS_PROXY",
                  "ALL_PROXY", "NO_PROXY", "GRPC_")
#: files of the clone that the README's commands name (copied into each folder)
CLONE_FILES = ("certs/fixtures", "docs/trisa.conf", "docs/haproxy.cfg", "docs/backoffice.py",
               "docs/payload.json")
#: clone files whose README ports are substituted too (configuration a command reads)
PORTED_FILES = ("docs/haproxy.cfg",)
#: PostgreSQL databases the README creates: like ports, a machine resource, so each run
#: gets its own name (``<name>_<random>``), dropped at the end
DATABASES = ("trisa_gds", "trisa_bob")
_DATABASE = re.compile(r"\b(%s)\b" % "|".join(DATABASES))  # noqa: UP031

#: the blocks that cannot run here: (section, annotation)
SKIPPED = [
    ("Two commands", "skip (runs make itself: the suite cannot run inside itself)"),
    ("Running a node", "skip (sample output, abridged with ...)"),
    ("Joining TRISA's TestNet or MainNet",
     "skip (needs the Internet and a certificate issued by TRISA)"),
]

#: placeholder -> the printed line its value is read from (the README's table says so)
PLACEHOLDER_SOURCES = {
    "VASP_ID": re.compile(r"^registered \S+ as (\S+) \(", re.M),
    "TOKEN": re.compile(r"^\s*Token: (\S+)$", re.M),
    "PKCS12_PASSWORD": re.compile(r"^PKCS#12 password \(shown only once, keep it\): (\S+)$",
                                  re.M),
    "SERIAL": re.compile(r'"serialNumber": "([0-9A-Fa-f]+)"'),
}
_PLACEHOLDER = re.compile(r"(?<![\w-])(%s)(?![\w-])" % "|".join(PLACEHOLDER_SOURCES))  # noqa: UP031
_TYPED = re.compile(r"#\s*password:\s*(\S+)")
_WAIT = 120.0  # bound on a single wait (a hang guard, not a speed check)


@dataclass(frozen=True)
class Block:
    number: int  # 1-based, in README order
    section: str
    lang: str
    annotation: str
    text: str


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    section, annotation = "", ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            lang = line[3:].strip()
            body: list[str] = []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(len(blocks) + 1, section, lang, annotation,
                                "\n".join(body) + "\n"))
            annotation = ""
        elif line.startswith("#"):
            section = line.lstrip("#").strip()
        elif match := _ANNOTATION.match(line.strip()):
            annotation = match.group(1)
        elif line.strip():
            annotation = ""  # an annotation counts only right before its block
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


@dataclass
class Session:
    name: str
    kind: str  # shell | terminal | script | pytest | deny-list
    blocks: list[Block] = field(default_factory=list)
    beside: list[Block] = field(default_factory=list)  # python blocks run beside it


#: blocks annotated ``runbook``: one operator's session, run in order in one shell by
#: tests/test_runbook.py ("Rotating a certificate")
RUNBOOK: list[Block] = []


def plan(blocks: list[Block]) -> tuple[list[Session], list[Block], list[str]]:
    """(sessions, skipped blocks, problems): how every block is run (``runbook`` blocks
    go to :data:`RUNBOOK` when ``blocks`` is the README's)."""
    runbook: list[Block] = RUNBOOK if blocks is BLOCKS else []
    sessions: list[Session] = []
    skipped: list[Block] = []
    problems: list[str] = []
    by_section: dict[str, Session] = {}
    beside: list[tuple[str, Block]] = []
    it = iter(blocks)
    for block in it:
        note, lang = block.annotation, block.lang
        name = f"{block.number}-{block.section}"
        if note.startswith("skip (") and note.endswith(")"):
            skipped.append(block)
        elif note == "runbook" and lang == "sh":
            runbook.append(block)
        elif note == "deny-list" and lang == "":
            sessions.append(Session(name, "deny-list", [block]))
        elif note == "pytest" and lang == "python":
            sessions.append(Session(name, "pytest", [block]))
        elif note.startswith("terminal") and lang == "sh":
            partner = next(it, None)
            if partner is None or partner.lang != "sh" or partner.annotation:
                problems.append(f"block {block.number}: a terminal needs a plain sh block after it")
                continue
            sessions.append(Session(name, "terminal", [block, partner]))
        elif match := re.fullmatch(r'python, beside "(.+)"', note):
            if lang != "python":
                problems.append(f"block {block.number}: 'beside' is for python blocks")
            beside.append((match.group(1), block))
        elif note == "" and lang == "sh":
            session = Session(name, "shell", [block])
            sessions.append(session)
            by_section.setdefault(block.section, session)
        elif note == "" and lang == "python":
            sessions.append(Session(name, "script", [block]))
        else:
            problems.append(f"block {block.number} ({block.section!r}): no way to run "
                            f"a {lang or 'plain'!r} block annotated {note!r}")
    for section, block in beside:
        if section not in by_section:
            problems.append(f"block {block.number}: no shell session in section {section!r}")
        else:
            by_section[section].beside.append(block)
    return sessions, skipped, problems


SESSIONS, SKIPPED_BLOCKS, PROBLEMS = plan(BLOCKS)


# -- what a reader has: a folder, a PATH, free ports ----------------------------------


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_NOT_INHERITED)}
    env.update(PATH=str(BIN) + os.pathsep + env.get("PATH", ""), HOME=str(home / "home"),
               XDG_CACHE_HOME=str(home / "cache"), PYTHONDONTWRITEBYTECODE="1")
    return env


def _clone_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    for rel in CLONE_FILES:
        src, dst = ROOT / rel, path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)
    return path


def _free_ports() -> dict[str, str]:
    socks = []
    try:
        for _ in PORTS:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return {str(p): str(s.getsockname()[1]) for p, s in zip(PORTS, socks, strict=True)}
    finally:
        for sock in socks:
            sock.close()


def _ports(text: str, ports: dict[str, str]) -> str:
    return _PORT.sub(lambda m: ports[m.group(1)], text)


def _wait_for_port(port: int, pid: int) -> None:
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise AssertionError(f"the background command (pid {pid}) exited") from None
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def commands(text: str) -> list[str]:
    """The block's commands: continuation lines joined, comment-only lines dropped."""
    out: list[str] = []
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line
        if line.endswith("\\"):
            current += "\n"
            continue
        out.append(current)
        current = ""
    assert not current, "a block ends inside a continued line"
    return out


def _background(command: str) -> bool:
    return re.search(r"&\s*(#.*)?$", command) is not None


def _listen_port(command: str, folder: Path | None = None) -> int:
    match = re.search(r"--(?:listen|addr)[ =]\S*?:(\d+)", command)
    config = re.search(r"^haproxy\b.*\s-f\s+(\S+)", command)
    if match is None and config is not None and folder is not None:  # its bind line
        match = re.search(r"^\s*bind\s+\S*:(\d+)\s*$", (folder / config.group(1)).read_text(),
                          re.M)
    assert match, f"cannot tell which port this background command serves: {command}"
    return int(match.group(1))


def _side_ports(command: str) -> list[int]:
    """The other listeners a background ``serve`` opens after its gRPC port (the API
    and the metrics), which a reader waits for by their start lines."""
    return [int(p) for p in re.findall(r"--(?:api|metrics)-listen[ =]\S*?:(\d+)", command)]


# -- a terminal -----------------------------------------------------------------------


class Terminal:
    """One bash reading commands from a pipe, as typed; output merged, read by a thread."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.transcript: list[str] = []
        self.jobs: list[int] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def _until(self, marker: str) -> tuple[str, str]:
        out: list[str] = []
        deadline = time.monotonic() + 300
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no answer; so far: {''.join(out)}") from None
            if line is None:
                raise AssertionError(f"the shell ended; output: {''.join(out)}")
            if line.startswith(marker):
                self.transcript.extend(out)
                return "".join(out), line[len(marker):].strip()
            out.append(line)

    def run(self, command: str, typed: str = "") -> tuple[int, str]:
        """Run a foreground command; its typed input (if any) is its stdin."""
        marker = f"__readme_{uuid.uuid4().hex} "
        tag = f"README_INPUT_{uuid.uuid4().hex}"
        stdin = f" <<'{tag}'\n{typed}\n{tag}" if typed else " </dev/null"
        self._send(f"{{ {command}\n}}{stdin}\necho \"{marker}$?\"\n")
        out, status = self._until(marker)
        return int(status), out

    def start(self, command: str) -> int:
        """Run a background command (``... &``) and return its pid."""
        marker = f"__readme_{uuid.uuid4().hex} "
        self._send(f"{command}\necho \"{marker}$!\"\n")
        _, pid = self._until(marker)
        self.jobs.append(int(pid))
        return int(pid)

    def foreground(self, command: str) -> None:
        """Start the terminal's long-running last command (it returns on Ctrl-C)."""
        self._send(f"{command}\n")

    def interrupt(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.jobs:
                marker = f"__readme_{uuid.uuid4().hex} "
                pids = " ".join(map(str, self.jobs))
                self._send(f"kill {pids}; wait {pids}; echo \"{marker}$?\"\n")
                self._until(marker)
            if self.proc.poll() is None:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# -- running a session ----------------------------------------------------------------


@dataclass
class Run:
    folder: Path
    env: dict[str, str] = field(repr=False)
    ports: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (command, output)
    twinned: set[str] = field(default_factory=set)  # placeholders refused literally
    databases: dict[str, str] = field(default_factory=lambda: {
        name: f"{name}_{uuid.uuid4().hex[:8]}" for name in DATABASES})
    used_databases: set[str] = field(default_factory=set)

    def substitute(self, text: str) -> str:
        """The README's ports and database names replaced by this run's."""
        def database(match: re.Match[str]) -> str:
            self.used_databases.add(self.databases[match.group(1)])
            return self.databases[match.group(1)]

        return _DATABASE.sub(database, _ports(text, self.ports))

    def localise(self) -> None:
        """The clone's configuration files name this run's ports."""
        for rel in PORTED_FILES:
            path = self.folder / rel
            path.write_text(self.substitute(path.read_text()))

    def drop_databases(self) -> None:
        if not self.used_databases:
            return
        import psycopg

        from trisa_peer.testing.postgres import admin_url

        with psycopg.connect(admin_url(), autocommit=True, connect_timeout=5) as conn:
            for name in sorted(self.used_databases):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def fill(self, command: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            assert name in self.values, f"{name} is used before any command printed it"
            return self.values[name]

        return _PLACEHOLDER.sub(value, command)

    def learn(self, output: str) -> None:
        for name, pattern in PLACEHOLDER_SOURCES.items():
            found = pattern.findall(output)
            if found:
                self.values[name] = found[-1]

    def twin(self, literal: str) -> None:
        """The placeholder itself: exit 1, one line naming what to put there."""
        child = subprocess.Popen(["bash", "-c", literal], cwd=self.folder, env=self.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            stdout, stderr = child.communicate(timeout=_WAIT)
        finally:  # a command that did not refuse may be a server: stop all it started
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        assert (child.returncode, stdout) == (1, ""), (literal, stdout, stderr)
        [line] = stderr.splitlines()
        assert "is a placeholder from the README: put " in line, line
        self.twinned.update(_PLACEHOLDER.findall(literal))

    def shell(self, terminal: Terminal, block: Block, *, last_runs_forever: bool = False) -> None:
        cmds = commands(self.substitute(block.text))
        literal_env = ""  # an `export NAME=PLACEHOLDER` waiting for the command it feeds
        for n, command in enumerate(cmds):
            is_export = command.startswith("export ")
            if _PLACEHOLDER.search(command):
                if is_export:
                    literal_env += command + "\n"
                else:
                    self.twin(literal_env + command.rstrip().rstrip("&"))
                    literal_env = ""
            elif literal_env and not is_export:
                self.twin(literal_env + command.rstrip().rstrip("&"))
                literal_env = ""
            filled = self.fill(command)
            if last_runs_forever and n == len(cmds) - 1:
                terminal.foreground(filled)
                _wait_for_port(_listen_port(filled, self.folder), terminal.proc.pid)
            elif _background(filled):
                pid = terminal.start(filled)
                for port in (_listen_port(filled, self.folder), *_side_ports(filled)):
                    _wait_for_port(port, pid)
            else:
                typed = _TYPED.search(command)
                status, out = terminal.run(filled, typed.group(1) if typed else "")
                assert status == 0, (filled, out)
                assert "Traceback" not in out, (filled, out)
                self.outputs.append((filled, out))
                self.learn(out)

    def script(self, block: Block, folder: Path) -> str:
        path = folder / "readme_example.py"
        path.write_text(self.substitute(block.text))
        proc = subprocess.run(["python", path.name], cwd=folder, env=self.env,
                              capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        return proc.stdout


def _output(run: Run, prefix: str) -> str:
    found = [out for cmd, out in run.outputs if cmd.startswith(prefix)]
    assert found, f"no command {prefix!r} ran"
    return found[-1]


def _after_shell(session: Session, run: Run) -> None:
    """What each session must have shown, beyond exiting 0."""
    if session.blocks[0].section == "Running a node":
        assert "all eight steps" in _output(run, "trisa-peer check"), run.outputs
    if session.blocks[0].section.startswith("Joining a directory"):
        check = _output(run, "trisa-peer check carol.vasp.test")
        assert "all eight steps" in check, check
        # the email's command is the README's, every flag included
        [email] = re.findall(r"^\s*(trisa-peer gds verify-contact .*)$",
                             _output(run, "trisa-peer gds outbox"), re.M)
        [readme] = [cmd for cmd, _ in run.outputs if cmd.startswith("trisa-peer gds verify-c")]
        assert email.split() == readme.replace("\\\n", " ").split()
        assert (run.folder / "certs" / "carol.vasp.test.zip").stat().st_mode & 0o777 == 0o600
    if session.blocks[0].section == "Sectigo":
        serial = run.values["SERIAL"]
        revoked = _output(run, "sectigo revoke")
        assert revoked == f"revoked certificate {serial} (reason: cessation of operation)\n"


def _not_ignored(folder: Path) -> list[str]:
    """What the commands left in the folder that the clone's .gitignore does not cover
    (the harness's own script and the clone's files excepted)."""
    clone = {(folder / rel) for rel in CLONE_FILES}
    left = sorted(
        str(path.relative_to(folder)) for path in folder.rglob("*")
        if path.is_file() and path.name != "readme_example.py"
        and not any(path == c or c in path.parents for c in clone))
    if not left:
        return []
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", "--stdin"],
                          input="\n".join(left) + "\n", capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    return sorted(set(left) - set(proc.stdout.splitlines()))


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Run]:
    run = Run(_clone_folder(tmp_path / "clone"), _env(tmp_path), _free_ports())
    run.localise()
    yield run
    run.drop_databases()


def test_every_block_is_run_or_listed_as_skipped() -> None:
    assert PROBLEMS == []
    assert [(b.section, b.annotation) for b in SKIPPED_BLOCKS] == SKIPPED
    covered = sorted(b.number for s in SESSIONS for b in (*s.blocks, *s.beside))
    covered += [b.number for b in SKIPPED_BLOCKS]
    covered += [b.number for b in RUNBOOK]  # run by tests/test_runbook.py
    assert sorted(covered) == [b.number for b in BLOCKS]
    assert RUNBOOK and {b.section for b in RUNBOOK} >= {"(a) Planned reissue"}
    assert {s.kind for s in SESSIONS} >= {"shell", "terminal", "pytest", "deny-list"}


def test_a_block_without_a_way_to_run_it_is_a_problem() -> None:
    """The failing twin of the plan: an unknown annotation, a stray language, a
    misplaced 'beside' and an unlisted skip are all caught."""
    text = ("# A\n<!-- readme-test: maybe -->\n```sh\nls\n```\n"
            "```json\n{}\n```\n"
            '<!-- readme-test: python, beside "Nowhere" -->\n```python\npass\n```\n'
            "<!-- readme-test: skip (new) -->\n```sh\nls\n```\n")
    sessions, skipped, problems = plan(readme_blocks(text))
    assert sessions == []
    assert len(problems) == 3, problems
    assert [(b.section, b.annotation) for b in skipped] == [("A", "skip (new)")]
    assert [(b.section, b.annotation) for b in skipped] != SKIPPED


def test_every_readme_placeholder_is_known_to_the_commands() -> None:
    """A placeholder the commands would not refuse could be pasted into a real run."""
    used = {m.group(1) for b in BLOCKS if b.lang == "sh" for m in _PLACEHOLDER.finditer(b.text)}
    assert used == set(PLACEHOLDER_SOURCES)
    assert set(PLACEHOLDERS) == set(PLACEHOLDER_SOURCES)
    shouting = set()
    for block in BLOCKS:
        if block.lang == "sh" and not block.annotation.startswith("skip"):
            for command in commands(block.text):
                for word in shlex.split(command, comments=True):
                    value = word.split("=", 1)[-1]
                    if re.fullmatch(r"[A-Z][A-Z0-9_]{3,}", value):
                        shouting.add(value)
    assert shouting <= set(PLACEHOLDERS), shouting - set(PLACEHOLDERS)


@pytest.mark.slow
@pytest.mark.parametrize(
    "session", [s for s in SESSIONS if s.kind in ("shell", "terminal", "script")],
    ids=lambda s: s.name)
def test_session_runs_as_written(session: Session, reader: Run, tmp_path: Path) -> None:
    if session.kind == "script":  # a standalone script, in a folder of its own
        folder = tmp_path / "script"
        folder.mkdir()
        reader.script(session.blocks[0], folder)
        return
    terminals = [Terminal(reader.folder, reader.env) for _ in session.blocks]
    try:
        if session.kind == "terminal":
            first, second = terminals
            reader.shell(first, session.blocks[0], last_runs_forever=True)
            reader.shell(second, session.blocks[1])
        else:
            reader.shell(terminals[0], session.blocks[0])
            for block in session.beside:
                reader.script(block, reader.folder)
        _after_shell(session, reader)
        used = {m for b in session.blocks for m in _PLACEHOLDER.findall(b.text)}
        assert reader.twinned == used
        assert _not_ignored(reader.folder) == []
    finally:
        for terminal in terminals:
            if session.kind == "terminal" and terminal is terminals[0]:
                terminal.interrupt()  # Ctrl-C in the first terminal
            terminal.close()


@pytest.mark.slow
@pytest.mark.parametrize("session", [s for s in SESSIONS if s.kind == "pytest"],
                         ids=lambda s: s.name)
def test_pytest_example_passes_in_a_fresh_folder(session: Session, reader: Run,
                                                 tmp_path: Path) -> None:
    folder = tmp_path / "user-project"
    folder.mkdir()
    (folder / "test_readme_example.py").write_text(session.blocks[0].text)
    proc = subprocess.run(["python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_readme_example.py"],
                          cwd=folder, env=reader.env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    tests = session.blocks[0].text.count("\ndef test_")
    assert re.search(rf"\b{tests} passed\b", proc.stdout), proc.stdout


@pytest.mark.parametrize("session", [s for s in SESSIONS if s.kind == "deny-list"],
                         ids=lambda s: s.name)
def test_deny_list_sample_parses(session: Session) -> None:
    rules = parse_deny_list(session.blocks[0].text)
    assert len(rules) == sum(1 for line in session.blocks[0].text.splitlines()
                             if line.strip() and not line.startswith("#"))


# -- the placeholders themselves ------------------------------------------------------


@pytest.mark.parametrize("argv", [["--id", "VASP_ID"], ["--token=TOKEN"], ["-s", "SERIAL"],
                                  ["review", "VASP_ID", "--accept"]])
def test_a_pasted_placeholder_is_refused_in_one_line(argv: list[str]) -> None:
    from trisa_peer.cli.placeholders import refuse_placeholders
    from trisa_peer.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        refuse_placeholders(argv, environ={})
    assert "\n" not in str(err.value)
    assert str(err.value).endswith("in its place")


@pytest.mark.parametrize("argv", [["--id", "51a4b7a8-f997-4d58-942a-19bfbdc09ef3"],
                                  ["--token=TOKENS"], ["-s", "serial"], ["--name", "VASP_ID x"]])
def test_a_real_value_is_not_a_placeholder(argv: list[str]) -> None:
    from trisa_peer.cli.placeholders import refuse_placeholders

    refuse_placeholders(argv, environ={"TRISA_PEER_PASSWORD": "f9SGdcA9DU3K8jvy",
                                       "OTHER": "PKCS12_PASSWORD"})


def test_a_placeholder_in_the_environment_is_refused() -> None:
    from trisa_peer.cli.placeholders import refuse_placeholders
    from trisa_peer.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"^TRISA_PEER_PASSWORD=PKCS12_PASSWORD is a"):
        refuse_placeholders([], environ={"TRISA_PEER_PASSWORD": "PKCS12_PASSWORD"})


def _verification_command(tmp_path: Path, flags: str) -> str:
    from trisa_peer._pb.trisa.gds.api.v1beta1 import api_pb2 as gds_pb2
    from trisa_peer.directory.service import Directory
    from trisa_peer.directory.store import SQLiteStore
    from trisa_peer.testing.cast import CHARLIE

    request = gds_pb2.RegisterRequest(common_name=CHARLIE.common_name,
                                      trisa_endpoint=f"{CHARLIE.common_name}:443",
                                      website=f"https://{CHARLIE.common_name}/",
                                      vasp_categories=["Exchange"])
    request.entity.CopyFrom(CHARLIE.legal_person())
    request.contacts.technical.name = "Tech"
    request.contacts.technical.email = f"tech@{CHARLIE.common_name}"
    with Directory(SQLiteStore(tmp_path / "gds.db")) as directory:
        directory.client_flags = flags
        directory.register(request)
        [email] = directory.store.emails()
    [command] = re.findall(r"^(trisa-peer gds verify-contact .*)$", email.body, re.M)
    return command


def test_the_verification_email_names_the_directory(tmp_path: Path) -> None:
    """What `gds serve` sets: the email's command carries the flags to reach it (the
    slow session above runs it against a real `gds serve`)."""
    flags = "--directory 127.0.0.1:4433 --directory-insecure"
    command = _verification_command(tmp_path, flags)
    assert command.startswith(f"trisa-peer gds verify-contact {flags} --id ")
    assert re.search(r" --token \S{48}$", command), command


def test_a_directory_not_told_how_it_is_reached_prints_the_bare_command(tmp_path: Path) -> None:
    command = _verification_command(tmp_path, "")
    assert re.fullmatch(r"trisa-peer gds verify-contact --id \S+ --token \S{48}", command)


def test_leftovers_outside_gitignore_are_reported(tmp_path: Path) -> None:
    """The twin of the .gitignore check of each session: a key and a CA folder at the
    clone's root are covered, a stray file is reported."""
    folder = _clone_folder(tmp_path / "clone")
    (folder / "example.com.key").write_text("k")
    (folder / "sectigo-ca").mkdir()
    (folder / "sectigo-ca" / "root.key").write_text("k")
    assert _not_ignored(folder) == []
    (folder / "notes.txt").write_text("n")
    assert _not_ignored(folder) == ["notes.txt"]
