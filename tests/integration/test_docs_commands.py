"""Every shell command README.md and docs/*.md show works as shown.

The commands are extracted from the documents' fenced shell blocks (``bash``, ``sh``, ``shell``, ``console``) by
``tests/support/docs_commands.py``, whose docstring is the convention for writing them: how console prompts and
output are read, and the ``<!-- docs-test: ... -->`` markers (``not-run: REASON``, ``same-as``, ``budget``,
``background`` + ``expect`` (+ ``ready``), ``exit``, ``timeout``, ``given``, ``operator``). Each command is one test case named
``FILE:LINE``.

They run as a reader would run them: in a copy of the repository, in document order, with the ``kubectl`` and
``helm`` of the test control plane on ``PATH``, ``KUBECONFIG`` pointing at that control plane, and a virtualenv
(system packages visible) first on ``PATH`` so ``pip install -e .`` installs the copy there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from controlplane import ControlPlane, die_with_parent, ensure_binaries
from docs_commands import (
    EXAMPLE_FILE,
    DocCommand,
    MarkerError,
    doc_files,
    extract,
    inline_commands,
    simple_commands,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from operator_process import OperatorProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 300.0
BACKGROUND_TIMEOUT = 90.0
DOCS_NAMESPACE = "ml"  # the namespace the docs' cluster examples use


def _collect() -> tuple[list[DocCommand], list[str]]:
    commands: list[DocCommand] = []
    problems: list[str] = []
    for rel in doc_files(ROOT):
        try:
            commands.extend(extract(ROOT, rel))
        except MarkerError as exc:
            problems.append(str(exc))
    return commands, problems


COMMANDS, MARKER_PROBLEMS = _collect()


# ------------------------------------------------------------------------------------------------ the reader's world

def _copy_repository(dest: Path) -> None:
    """The files a clone holds, as they are in the working tree (tracked and new, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


class Reader:
    """A copy of the repository, a virtualenv, and the test control plane; runs commands there."""

    def __init__(self, base: Path, cp: ControlPlane, api: client.ApiClient) -> None:
        self.repo = base / "repo"
        self.repo.mkdir()
        _copy_repository(self.repo)
        venv = base / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        self.cp, self.api, self.base = cp, api, base
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KUBETUNE_", "KUBERNETES_"))}
        env.update(KUBECONFIG=str(cp.kubeconfig), VIRTUAL_ENV=str(venv), PYTHONUNBUFFERED="1",
                   PATH=os.pathsep.join([str(venv / "bin"), str(cp.bin_dir), env.get("PATH", "")]))
        self.env = env
        self.operator: OperatorProcess | None = None
        self.namespaces_before = self._namespaces()

    def _namespaces(self) -> set[str]:
        return {str(ns.metadata.name) for ns in client.CoreV1Api(self.api).list_namespace().items if ns.metadata}

    def close(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        core = client.CoreV1Api(self.api)
        for name in self._namespaces() - self.namespaces_before:
            with contextlib.suppress(ApiException):
                core.delete_namespace(name, propagation_policy="Background")

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=self.env["PATH"])

    # -- running --------------------------------------------------------------------------------------------

    def shell(self, command: str, timeout: float = DEFAULT_TIMEOUT, tty: bool = False
              ) -> subprocess.CompletedProcess[str]:
        """``bash -c COMMAND`` in the copy (on a pseudo-terminal with ``tty``); the whole process group is killed on
        timeout."""
        argv = ["bash", "-o", "pipefail", "-c", command]
        if tty:  # script(1) runs $SHELL -c COMMAND on a new pty and exits with its code (-e)
            argv = ["script", "--quiet", "--return", "--flush", "--command", shlex.join(argv), "/dev/null"]
        proc = subprocess.Popen(argv, cwd=self.repo, env={**self.env, "SHELL": "/bin/sh"}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True, preexec_fn=die_with_parent)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"{command!r} did not finish within {timeout:.0f} s\n{_tail(out, err)}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def background(self, command: str, expect: list[str], ready: str | None, timeout: float) -> str:
        """Start COMMAND, wait until its output matches every EXPECT (and READY answers 200), Ctrl-C it; its
        output."""
        log = self.base / "background.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(["bash", "-c", command], cwd=self.repo, env=self.env, stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        try:
            deadline = time.monotonic() + timeout
            while not all(re.search(e, log.read_text(errors="replace"), re.MULTILINE) for e in expect):
                assert proc.poll() is None, (
                    f"{command!r} exited ({proc.returncode}) before its output matched {expect!r}:\n"
                    f"{log.read_text(errors='replace')[-4000:]}")
                assert time.monotonic() < deadline, (
                    f"{command!r}: no {expect!r} in its output within {timeout:.0f} s:\n"
                    f"{log.read_text(errors='replace')[-4000:]}")
                time.sleep(0.2)
            while ready is not None and not _answers_200(ready):
                assert proc.poll() is None, (
                    f"{command!r} exited ({proc.returncode}) before {ready} answered:\n"
                    f"{log.read_text(errors='replace')[-4000:]}")
                assert time.monotonic() < deadline, (
                    f"{command!r}: {ready} did not answer 200 within {timeout:.0f} s:\n"
                    f"{log.read_text(errors='replace')[-4000:]}")
                time.sleep(0.2)
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{command!r} did not stop within 30 s of Ctrl-C:\n{log.read_text(errors='replace')}")
            output = log.read_text(errors="replace")
            assert "Traceback (most recent call last)" not in output, f"{command!r} on Ctrl-C:\n{output[-4000:]}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return log.read_text(errors="replace")

    @contextlib.contextmanager
    def budget(self, cmd: DocCommand) -> Iterator[None]:
        """The ``budget: N`` marker: the experiment files the command names run with maxTrials N."""
        value = cmd.get("budget")
        saved: dict[Path, str] = {}
        if value is not None:
            n = int(value)
            for rel in sorted(set(EXAMPLE_FILE.findall(cmd.text))):
                path = self.repo / rel
                saved[path] = path.read_text()
                doc = yaml.safe_load(saved[path])
                spec = doc["spec"]
                spec["maxTrials"] = n
                spec["parallelTrials"] = min(int(spec.get("parallelTrials", 1)), n)
                path.write_text(yaml.safe_dump(doc, sort_keys=False))
            assert saved, f"budget: {value} but the command names no experiment file (examples/*.yaml)"
        try:
            yield
        finally:
            for path, text in saved.items():
                path.write_text(text)

    def ensure_operator(self) -> None:
        """The ``operator`` marker: the docs' namespace with the chart's trial RBAC, and the operator watching it."""
        if self.operator is not None and self.operator.running:
            return
        from conftest import create_trial_rbac  # tests/integration is on sys.path as the conftest's directory

        core = client.CoreV1Api(self.api)
        if DOCS_NAMESPACE not in self._namespaces():
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=DOCS_NAMESPACE)))

            def default_sa() -> bool:
                try:
                    core.read_namespaced_service_account("default", DOCS_NAMESPACE)
                    return True
                except ApiException:
                    return False

            wait_for("the default ServiceAccount", default_sa, timeout=30, interval=0.1)
            create_trial_rbac(self.api, DOCS_NAMESPACE)
        log_dir = self.base / "operator"
        log_dir.mkdir(exist_ok=True)
        self.operator = OperatorProcess(self.cp.kubeconfig, log_dir, extra_args=["-n", DOCS_NAMESPACE]).start()

    # -- the checks of a command that is not run ------------------------------------------------------------

    def check_statically(self, cmd: DocCommand) -> None:
        for argv in simple_commands(cmd.text):
            self._paths_exist(argv)
            program = argv[0]
            if "/" in program:  # a script of the repository, e.g. hack/build-images.sh
                assert os.access(self.repo / program, os.X_OK), f"{program} is not an executable of the repository"
            if program == "kubetune":
                self._kubetune(argv)
            elif program == "kubectl":
                self._ok(["kubectl", *argv[1:], "--help"])
                for flag, value in zip(argv, argv[1:]):
                    if flag in ("-k", "--kustomize"):
                        self._ok(["kubectl", "kustomize", value])
            elif program == "helm" and len(argv) > 1 and argv[1] in ("install", "upgrade"):
                upgrade_only = {"--reuse-values", "--reset-values", "--reset-then-reuse-values", "--install"}
                self._ok(["helm", "template", *[a for a in argv[2:] if a not in upgrade_only]])
            elif program == "helm":
                self._ok([*argv, "--help"])
            elif program in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
                self._ok([program, argv[1], "--help"])

    def _ok(self, argv: list[str]) -> None:
        r = self.shell(shlex.join(argv), timeout=120)
        assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}:\n{_tail(r.stdout, r.stderr)}"

    def _kubetune(self, argv: list[str]) -> None:
        from kubetune.cli import build_parser

        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exc:
            pytest.fail(f"kubetune's parser refuses {argv[1:]} (exit {exc.code})")
        assert self.which("kubetune"), "no kubetune on PATH"
        self._ok(["kubetune", argv[1], "--help"])

    def _paths_exist(self, argv: list[str]) -> None:
        for prev, token in zip(["", *argv], argv):
            if prev in OUTPUT_FLAGS:
                continue  # a file the command writes (an absolute path would be read from this machine's disk)
            named = prev in ("-f", "--file", "--filename", "--patch-file", "-k", "--kustomize")
            pathlike = (":" not in token and "=" not in token and not token.startswith("-")
                        and (token.endswith("/") or token.endswith((".yaml", ".yml", ".py", ".json"))))
            if named or pathlike:
                assert (self.repo / token).exists(), f"{token} does not exist in the repository"


OUTPUT_FLAGS = ("--json", "--out", "-o", "--output", "--png")
"""Flags whose value is a file or directory the command writes, not one that must exist."""


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status) == 200
    except (OSError, ValueError):
        return False


def _tail(out: str, err: str, chars: int = 4000) -> str:
    return f"--- stdout ---\n{out[-chars:]}\n--- stderr ---\n{err[-chars:]}"


@pytest.fixture(scope="module")
def reader(control_plane: ControlPlane, node_agent: Any, kube_api: client.ApiClient, crd: None) -> Iterator[Reader]:
    base = Path(tempfile.mkdtemp(prefix="kubetune-docs-"))
    r = Reader(base, control_plane, kube_api)
    try:
        yield r
    finally:
        r.close()
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------- the tests

def test_markers_are_well_formed() -> None:
    """Every marker parses, stands above a shell block, and every not-run marker says why."""
    assert not MARKER_PROBLEMS, "\n".join(MARKER_PROBLEMS)
    assert COMMANDS, "no shell commands found in README.md and docs/*.md"
    for cmd in COMMANDS:
        for d in cmd.directives:
            if d.kind == "not-run":
                assert len(d.value.split()) >= 2, f"{cmd.id}: the reason {d.value!r} says too little"


def test_the_readme_commands_are_covered() -> None:
    """The README's two main commands: the example is run; the test command is the one .ci/run runs."""
    readme = [c for c in COMMANDS if c.path == "README.md"]
    [example] = [c for c in readme if c.text.startswith("pip install -e . && kubetune run examples/")]
    assert not example.has("not-run") and not example.has("same-as")
    [suite] = [c for c in readme if "python -m pytest" in c.text]
    assert suite.get("same-as") == ".ci/run"
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci_lines[-1] == suite.text, f".ci/run ends with {ci_lines[-1]!r}, the README says {suite.text!r}"


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.id for c in COMMANDS])
def test_doc_command(cmd: DocCommand, reader: Reader) -> None:
    if cmd.has("not-run"):
        reader.check_statically(cmd)
        return
    same_as = cmd.get("same-as")
    if same_as is not None:
        lines = [line.strip() for line in (reader.repo / same_as).read_text().splitlines()]
        assert cmd.text in lines, f"{same_as} does not run {cmd.text!r}"
        return
    if cmd.has("operator"):
        reader.ensure_operator()
    for given in cmd.all("given"):
        r = reader.shell(given)
        assert r.returncode == 0, f"given {given!r} failed:\n{_tail(r.stdout, r.stderr)}"
        print(f"{cmd.id}: given {given!r}: {(r.stdout + r.stderr).strip()}")
    timeout = float(cmd.get("timeout") or (BACKGROUND_TIMEOUT if cmd.has("background") else DEFAULT_TIMEOUT))
    expect = cmd.all("expect")
    with reader.budget(cmd):
        if cmd.has("background"):
            output = reader.background(cmd.text, expect, cmd.get("ready"), timeout)
            print(f"{cmd.id}: came up and stopped on Ctrl-C; its output:\n{output[-2000:]}")
            return
        started = time.monotonic()
        r = reader.shell(cmd.text, timeout=timeout, tty=cmd.has("tty"))
    print(f"{cmd.id}: exit {r.returncode} in {time.monotonic() - started:.1f} s\n{_tail(r.stdout, r.stderr, 1500)}")
    want = int(cmd.get("exit") or 0)
    assert r.returncode == want, f"{cmd.text!r} exited {r.returncode}, not {want}\n{_tail(r.stdout, r.stderr)}"
    for e in expect:
        assert re.search(e, r.stdout + r.stderr, re.MULTILINE), (
            f"{cmd.text!r}: no {e!r} in its output\n{_tail(r.stdout, r.stderr)}")


def test_inline_kubetune_commands_name_real_subcommands_and_options() -> None:
    """The ``kubetune ...`` code spans of the running text (synopses like ``kubetune run FILE [-p N]``): each names a
    subcommand of the CLI and only options that subcommand has."""
    import argparse

    from kubetune.cli import build_parser

    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    spans = [c for rel in doc_files(ROOT) for c in inline_commands(ROOT, rel) if c.program == "kubetune"]
    assert spans
    wrong = []
    for span in spans:
        parser = sub.choices.get(span.words[0]) if span.words else None
        if parser is None:
            wrong.append(f"{span.id}: `{span.text}`: no such subcommand")
            continue
        wrong += [f"{span.id}: `{span.text}`: kubetune {span.words[0]} has no {o}"
                  for o in span.options if o not in parser._option_string_actions]
    assert not wrong, "\n".join(wrong)


def test_inline_kubectl_and_helm_commands_parse() -> None:
    """The ``kubectl ...`` and ``helm ...`` code spans of the running text: the subcommand and its flags exist (the
    span with ``--help``, with the control plane's kubectl and helm)."""
    bin_dir = ensure_binaries()  # the control plane's kubectl and helm; no cluster needed
    spans = {c.text: c for rel in doc_files(ROOT) for c in inline_commands(ROOT, rel) if c.program != "kubetune"}
    assert spans
    wrong = []
    for text, span in spans.items():
        program, *words = shlex.split(text)
        tries = [words, words[:-1]] if words[-1].startswith("-") else [words]  # `kubectl apply -k`: a flag mentioned
        for args in tries:
            r = subprocess.run([str(bin_dir / program), *args, "--help"], capture_output=True,
                               text=True, timeout=60, cwd=ROOT)
            if r.returncode == 0:
                break
        else:
            wrong.append(f"{span.id}: `{text}`: {r.stderr.strip()[:300]}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------------------------------------- the extraction

def _extract_text(tmp_path: Path, text: str) -> list[DocCommand]:
    (tmp_path / "doc.md").write_text(textwrap.dedent(text))
    return extract(tmp_path, "doc.md")


def test_extraction_reads_prompts_continuations_and_heredocs(tmp_path: Path) -> None:
    cmds = _extract_text(tmp_path, """\
        # Title

        ```console
        $ kubetune get -n ml
        NAME   BEST
        $ helm install x charts/x \\
          --set a=b
        output
        ```

        <!-- docs-test[2]: not-run: needs a container registry -->
        ```bash
        # a comment
        kubectl apply -f - <<'EOF'
        apiVersion: v1
        EOF
        docker push registry.example.com/x:1   # pushes
        ```

        ```yaml
        key: $ not a command
        ```
        """)
    assert [(c.line, c.text, c.index) for c in cmds] == [
        (4, "kubetune get -n ml", 1),
        (6, "helm install x charts/x \\\n--set a=b", 2),
        (14, "kubectl apply -f - <<'EOF'\napiVersion: v1\nEOF", 1),
        (17, "docker push registry.example.com/x:1   # pushes", 2),
    ]
    assert [d.kind for d in cmds[2].directives] == []
    assert [(d.kind, d.value) for d in cmds[3].directives] == [("not-run", "needs a container registry")]
    assert simple_commands(cmds[1].text) == [["helm", "install", "x", "charts/x", "--set", "a=b"]]
    assert cmds[0].id == "doc.md:4"


def test_inline_spans_are_read_outside_fences(tmp_path: Path) -> None:
    (tmp_path / "doc.md").write_text(
        "Run `kubetune get [NAME] [-A] [-o wide\\|yaml]` or `kubectl get tex`; not ``kubetune x``.\n"
        "```bash\necho `kubetune crd`\n```\n")
    spans = inline_commands(tmp_path, "doc.md")
    assert [(s.id, s.text, s.words, s.options) for s in spans] == [
        ("doc.md:1", "kubetune get [NAME] [-A] [-o wide|yaml]", ["get"], ["-A", "-o"]),
        ("doc.md:1", "kubectl get tex", ["get", "tex"], []),
    ]


@pytest.mark.parametrize("text, problem", [
    ("<!-- docs-test: not-run -->\n```bash\nls\n```\n", "not-run needs a reason"),
    ("<!-- docs-test: not-run:   -->\n```bash\nls\n```\n", "not-run needs a reason"),
    ("<!-- docs-test: skip: slow -->\n```bash\nls\n```\n", "unknown marker kind 'skip'"),
    ("<!-- docs-test: not-run: needs a registry -->\n\nText.\n```bash\nls\n```\n", "directly above a code block"),
    ("<!-- docs-test[3]: not-run: needs a registry -->\n```bash\nls\n```\n", "has 1 command(s), not 3"),
    ("<!-- docs-test: background -->\n```bash\nkubetune operator\n```\n", "background needs expect"),
    ("<!-- docs-test: not-run: needs a registry -->\n<!-- docs-test: exit: 1 -->\n```bash\nls\n```\n",
     "takes no other marker"),
    ("<!-- docs-test: budget: many -->\n```bash\nls\n```\n", "budget needs an integer"),
    ("<!-- docs-test: ready: http://127.0.0.1:8080/ -->\n```bash\nls\n```\n", "ready is for background commands"),
    ("<!-- docs-test: not-run: needs a registry -->\n```yaml\na: 1\n```\n", "shell blocks only"),
])
def test_malformed_markers_are_refused(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(MarkerError, match=re.escape(problem)):
        _extract_text(tmp_path, text)
