"""The shell commands of README.md and docs/*.md, as a reader sees them, with the markers that say how to test them.

What counts as a command
------------------------

Fenced code blocks tagged ``bash``, ``sh``, ``shell`` or ``console`` hold commands; every other block (``yaml``,
``python``, untagged) is not shell.

* ``bash``/``sh``/``shell``: every line that is not blank and not a ``#`` comment starts a command. A line ending
  in ``\\`` continues on the next line; a here-document (``<<EOF``, ``<<-'EOF'``) runs to its terminator line.
  ``a && b`` on one line is one command.
* ``console``: a line starting with ``$ `` is a command (the prompt is dropped; ``\\`` continuations follow without
  a prompt); every other line is sample output. Output is illustrative (times, values, trial numbers differ from
  run to run) and is not compared; use ``expect`` below to check what matters.

Each command is one test case, named ``FILE:LINE`` after the line it starts on.

Commands in running text (code spans such as ```kubetune run FILE [-p N]``` or ```kubectl get tex```) are not run;
a ``kubetune`` span must name a real subcommand and only options it has, a ``kubectl``/``helm`` span must parse
(the span with ``--help``).

Markers
-------

A marker is an HTML comment (invisible in rendered Markdown) on the line(s) directly above a block's opening fence::

    <!-- docs-test: KIND: VALUE -->      applies to every command of the block
    <!-- docs-test[2]: KIND: VALUE -->   applies to the block's 2nd command only (1-based)

Several markers may stand one per line above the same block. A command without markers is run as shown and must
exit 0. The kinds:

``not-run: REASON``
    The command cannot run here (it needs a container registry, a built image, Argo CD, ...). REASON is required
    and says why. What can be checked still is: every ``kubetune`` command parses with kubetune's own argument
    parser and ``kubetune SUB --help`` works; ``kubectl`` writes (``apply``, ``create``, ``patch``, ``delete``,
    ``replace``) run with ``--dry-run=server`` against the test control plane, other ``kubectl`` verbs' ``--help``
    works; ``helm install``/``upgrade`` of a chart in the repository renders with ``helm template`` and the same
    values; ``python FILE`` has its ``--help``; files named with ``-f``/``--file``/``--patch-file``/``-k`` or as a
    path in the repository exist; a program named by its path (``hack/build-images.sh``) is an executable there.
``same-as: PATH``
    Not run here because PATH runs it: the command must be exactly (after stripping) one line of PATH. The
    README's test command and ``.ci/run`` are held together this way.
``budget: N``
    Every experiment file the command names (``examples/*.yaml``) runs with ``maxTrials: N`` (``parallelTrials``
    capped at N), the file's only change; for ``kubetune run``, ``kubetune submit`` and ``kubectl apply -f`` of a
    long experiment. Give the same N to every block naming the same file in one document set: ``kubetune run``
    continues a results directory only for the same spec.
``background``
    A long-running command (``kubetune operator``, a dashboard): start it, wait until its output matches the
    ``expect`` regexes (required with ``background``; at most ``timeout`` seconds, default 90), then stop it with
    SIGINT, as Ctrl-C does; it must exit within 30 s and print no traceback.
``ready: URL``
    With ``background``: after the ``expect`` match, the command is up only once URL answers HTTP 200 (a liveness
    endpoint, the dashboard's page), within the same ``timeout``.
``expect: REGEX``
    stdout + stderr (in that order) must match REGEX (``re.search``, multiline; ``(?s)`` lets ``.`` span lines).
    Repeatable: every one must match.
``exit: N``
    The expected exit code (default 0).
``timeout: SECONDS``
    The limit for the command (default 300).
``tty``
    Run the command on a pseudo-terminal (``script``), as typed into a terminal: what a reader sees first, e.g.
    ``kubetune run``'s live view. stdout and stderr are then one stream (``expect`` reads it).
``given: COMMAND``
    A shell command the test runs (and requires to succeed) before the command, for state a reader has from
    elsewhere (e.g. Argo CD's ``argocd-cm`` ConfigMap). Repeatable; run in order.
``operator``
    The command needs the operator running and the namespace ``ml`` the docs use (with the trial ServiceAccount
    and Role the chart makes): the test provides both, as the other integration tests do.

Commands run in one copy of the repository's files (what ``git ls-files`` lists, as in the working tree), in
document order (README.md first, then docs/*.md by name), so a later command sees what an earlier one left, as
for a reader who follows the docs; with ``KUBECONFIG`` pointing at the test control plane, the control plane's
``kubectl`` and ``helm`` on ``PATH``, and a virtualenv (with the system's packages) first on ``PATH``, so a
``pip install -e .`` installs the copy there and not over the developer's install.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
KINDS = frozenset({
    "not-run", "same-as", "budget", "background", "expect", "ready", "exit", "timeout", "given", "operator", "tty",
})
FLAG_KINDS = frozenset({"background", "operator", "tty"})
REPEATABLE = frozenset({"given", "expect"})

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*docs-test(?:\[(?P<index>\d+)\])?\s*:\s*(?P<body>.*?)\s*-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*docs-test")
_HEREDOC = re.compile(r"<<(?P<dash>-?)\s*(?P<q>['\"]?)(?P<word>[A-Za-z_][\w-]*)(?P=q)")


class MarkerError(ValueError):
    """A marker that is malformed or stands where it applies to nothing."""


@dataclass(frozen=True)
class Directive:
    kind: str
    value: str
    line: int
    index: int | None  # 1-based command of the block, None = every command


@dataclass(frozen=True)
class DocCommand:
    path: str  # relative to the repository, e.g. "docs/install.md"
    line: int  # 1-based line the command starts on
    text: str  # as bash reads it (continuations and here-documents included, console prompts dropped)
    lang: str
    index: int  # 1-based within its block
    directives: tuple[Directive, ...] = field(default=())

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    def get(self, kind: str) -> str | None:
        for d in self.directives:
            if d.kind == kind:
                return d.value
        return None

    def has(self, kind: str) -> bool:
        return any(d.kind == kind for d in self.directives)

    def all(self, kind: str) -> list[str]:
        return [d.value for d in self.directives if d.kind == kind]


@dataclass
class _Block:
    lang: str
    start: int  # line of the opening fence
    lines: list[tuple[int, str]]
    markers: list[Directive]


def parse_marker(text: str, line: int) -> Directive:
    m = _MARKER.match(text)
    if m is None:
        raise MarkerError(f"line {line}: not a marker of the form <!-- docs-test[N]: KIND: VALUE -->: {text.strip()}")
    kind, _, value = m["body"].partition(":")
    kind, value = kind.strip(), value.strip()
    if kind not in KINDS:
        raise MarkerError(f"line {line}: unknown marker kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    if kind in FLAG_KINDS and value:
        raise MarkerError(f"line {line}: {kind} takes no value")
    if kind not in FLAG_KINDS and not value:
        what = "a reason" if kind == "not-run" else "a value"
        raise MarkerError(f"line {line}: {kind} needs {what}")
    if kind in ("budget", "exit") and not value.isdigit():
        raise MarkerError(f"line {line}: {kind} needs an integer, not {value!r}")
    if kind == "timeout":
        try:
            ok = float(value) > 0
        except ValueError:
            ok = False
        if not ok:
            raise MarkerError(f"line {line}: timeout needs a positive number of seconds, not {value!r}")
    if kind == "expect":
        try:
            re.compile(value)
        except re.error as exc:
            raise MarkerError(f"line {line}: expect is not a regular expression: {exc}") from None
    index = int(m["index"]) if m["index"] else None
    if index == 0:
        raise MarkerError(f"line {line}: commands are numbered from 1")
    return Directive(kind, value, line, index)


def _blocks(text: str) -> Iterator[_Block]:
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            if _ANY_MARKER.search(lines[i]):
                # A marker must be followed by more markers or a fence.
                j = i
                while j < len(lines) and _ANY_MARKER.search(lines[j]):
                    j += 1
                if j >= len(lines) or _FENCE.match(lines[j]) is None:
                    raise MarkerError(f"line {i + 1}: a docs-test marker must stand directly above a code block")
            i += 1
            continue
        fence, lang = m["fence"], m["lang"].lower()
        markers: list[Directive] = []
        j = i - 1
        while j >= 0 and _ANY_MARKER.search(lines[j]):
            markers.insert(0, parse_marker(lines[j], j + 1))
            j -= 1
        body: list[tuple[int, str]] = []
        k = i + 1
        while k < len(lines) and not lines[k].strip().startswith(fence[0] * len(fence)):
            body.append((k + 1, lines[k]))
            k += 1
        if markers and lang not in SHELL_LANGS:
            raise MarkerError(f"line {i + 1}: docs-test markers apply to shell blocks only, not {lang or 'untagged'}")
        yield _Block(lang, i + 1, body, markers)
        i = k + 1


def _commands(block: _Block) -> Iterator[tuple[int, str]]:
    """(line, text) of each command of a shell block."""
    console = block.lang == "console"
    lines = block.lines
    i = 0
    while i < len(lines):
        number, raw = lines[i]
        stripped = raw.strip()
        i += 1
        if console:
            if not stripped.startswith("$ "):
                continue  # sample output
            stripped = stripped[2:].strip()
        elif not stripped or stripped.startswith("#"):
            continue
        parts = [stripped]
        while parts[-1].endswith("\\") and i < len(lines):
            parts.append(lines[i][1].strip())
            i += 1
        text = "\n".join(parts)
        for heredoc in _HEREDOC.finditer(text):
            word, dash = heredoc["word"], heredoc["dash"]
            while i < len(lines):
                body_line = lines[i][1]
                i += 1
                text += "\n" + body_line
                if (body_line.lstrip("\t") if dash else body_line) == word:
                    break
        yield number, text


def extract(root: Path, relpath: str) -> list[DocCommand]:
    """Every command of one Markdown file, with its markers; :class:`MarkerError` for a marker that is wrong."""
    text = (root / relpath).read_text(encoding="utf-8")
    found: list[DocCommand] = []
    try:
        for block in _blocks(text):
            if block.lang not in SHELL_LANGS:
                continue
            cmds = list(_commands(block))
            for d in block.markers:
                if d.index is not None and d.index > len(cmds):
                    raise MarkerError(f"line {d.line}: the block below has {len(cmds)} command(s), not {d.index}")
            for n, (line, cmd) in enumerate(cmds, start=1):
                directives = tuple(d for d in block.markers if d.index in (None, n))
                _check_combination(directives, line)
                found.append(DocCommand(relpath, line, cmd, block.lang, n, directives))
    except MarkerError as exc:
        raise MarkerError(f"{relpath}: {exc}") from None
    return found


def _check_combination(directives: Iterable[Directive], line: int) -> None:
    kinds = [d.kind for d in directives]
    for kind in set(kinds) - REPEATABLE:
        if kinds.count(kind) > 1:
            raise MarkerError(f"line {line}: {kind} given twice for one command")
    skipped = {"not-run", "same-as"} & set(kinds)
    if len(skipped) > 1:
        raise MarkerError(f"line {line}: not-run and same-as exclude each other")
    if skipped and set(kinds) - skipped:
        raise MarkerError(f"line {line}: a command that is not run takes no other marker ({', '.join(kinds)})")
    if "ready" in kinds and "background" not in kinds:
        raise MarkerError(f"line {line}: ready is for background commands")
    if "background" in kinds and "expect" not in kinds:
        raise MarkerError(f"line {line}: background needs expect: REGEX (what shows the command came up)")


def doc_files(root: Path) -> list[str]:
    return ["README.md", *sorted(str(p.relative_to(root)) for p in (root / "docs").glob("*.md"))]


def all_commands(root: Path) -> list[DocCommand]:
    return [c for rel in doc_files(root) for c in extract(root, rel)]


def simple_commands(text: str) -> list[list[str]]:
    """The simple commands of a command line (split at ``&&``, ``||``, ``;``, ``|``), each as argv.

    Enough for the static checks of commands that are not run: no subshells, no redirections beyond dropping
    them, comments dropped.
    """
    lexer = shlex.shlex(text.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    out: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            out.append([])
        else:
            out[-1].append(token)
    return [argv for argv in out if argv]


EXAMPLE_FILE = re.compile(r"(?<![\w/.-])examples/[\w.-]+\.ya?ml\b")


_INLINE = re.compile(r"(?<!`)`(?P<code>(?:kubetune|kubectl|helm) [^`]+)`(?!`)")


@dataclass(frozen=True)
class InlineCommand:
    """A command in running text (a code span), e.g. a synopsis ``kubetune run FILE [-p N]``."""

    path: str
    line: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def program(self) -> str:
        return self.text.split()[0]

    @property
    def words(self) -> list[str]:
        """The subcommand words before the first option, placeholder or bracket (``get``, ``rollout status``)."""
        words: list[str] = []
        for word in self.text.split()[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            words.append(word)
        return words

    @property
    def options(self) -> list[str]:
        """Every option the span names (``[-o wide|yaml]`` gives ``-o``; ``--timeout=5`` gives ``--timeout``)."""
        return re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", self.text)


def inline_commands(root: Path, relpath: str) -> list[InlineCommand]:
    """The ``kubetune``, ``kubectl`` and ``helm`` code spans of a Markdown file, outside fenced blocks."""
    found: list[InlineCommand] = []
    fence: str | None = None
    for number, line in enumerate((root / relpath).read_text(encoding="utf-8").splitlines(), start=1):
        m = _FENCE.match(line)
        if m is not None:
            if fence is None:
                fence = m["fence"]
            elif line.strip().startswith(fence):
                fence = None
            continue
        if fence is None:
            found.extend(InlineCommand(relpath, number, s["code"].replace("\\|", "|"))
                         for s in _INLINE.finditer(line))
    return found
