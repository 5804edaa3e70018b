"""split_command: every simple command bash would run, seen through wrappers and shell strings."""

from __future__ import annotations

import shlex

import pytest

from stagecrew.tools.shell_parse import (
    Redirect,
    SimpleCommand,
    git_call,
    git_canonical,
    split_command,
    unquote,
)


def argvs(command: str) -> list[list[str]]:
    return [c.argv for c in split_command(command)]


def only(command: str) -> SimpleCommand:
    parsed = split_command(command)
    assert len(parsed.commands) == 1, parsed.commands
    return parsed.commands[0]


# -- lists, pipes, subshells ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("ls -la", [["ls", "-la"]]),
        ("a && b", [["a"], ["b"]]),
        ("a || b", [["a"], ["b"]]),
        ("a; b", [["a"], ["b"]]),
        ("a\nb", [["a"], ["b"]]),
        ("a | b | c", [["a"], ["b"], ["c"]]),
        ("sleep 1 &", [["sleep", "1"]]),
        ("(cd src; ls) && { pwd; }", [["cd", "src"], ["ls"], ["pwd"]]),
        ("! grep -q x f", [["grep", "-q", "x", "f"]]),
        ("if true; then rm a; else rm b; fi", [["true"], ["rm", "a"], ["rm", "b"]]),
        ("for f in a b; do cat $f; done", [["cat", "$f"]]),
        ("while read l; do echo $l; done", [["read", "l"], ["echo", "$l"]]),
        ("f() { rm -rf x; }; f", [["rm", "-rf", "x"], ["f"]]),
        ("git commit -m 'a b' \"c d\"", [["git", "commit", "-m", "a b", "c d"]]),
    ],
)
def test_compound_commands_are_flattened(command: str, expected: list[list[str]]) -> None:
    parsed = split_command(command)
    assert [c.argv for c in parsed] == expected
    assert not parsed.unparseable
    assert not parsed.has_substitution


def test_text_spans_point_into_the_source() -> None:
    source = "cd x && git push origin main || echo failed"
    parsed = split_command(source)
    assert [c.text for c in parsed] == ["cd x", "git push origin main", "echo failed"]
    for cmd in parsed:
        assert source[cmd.span[0] : cmd.span[1]] == cmd.text
    assert parsed.commands[1].normalized == "git push origin main"


def test_blank_and_comment_only_lines_have_no_commands() -> None:
    for source in ("", "   ", "# just a comment", "\n# a\n  # b\n"):
        parsed = split_command(source)
        assert parsed.commands == []
        assert not parsed.unparseable
    assert argvs("ls # trailing comment") == [["ls"]]


def test_assignments_are_kept_apart_from_argv() -> None:
    cmd = only("FOO=1 BAR='a b' make test")
    assert cmd.argv == ["make", "test"]
    assert cmd.assignments == ["FOO=1", "BAR=a b"]
    bare = only("X=1")
    assert bare.argv == [] and bare.assignments == ["X=1"]


# -- wrappers ------------------------------------------------------------------------------------


def test_the_brief_example_is_seen_as_rm() -> None:
    cmd = only("sudo env FOO=1 timeout 5 rm -rf /")
    assert cmd.argv == ["rm", "-rf", "/"]
    assert cmd.stages == [
        ["sudo", "env", "FOO=1", "timeout", "5", "rm", "-rf", "/"],
        ["env", "FOO=1", "timeout", "5", "rm", "-rf", "/"],
        ["timeout", "5", "rm", "-rf", "/"],
        ["rm", "-rf", "/"],
    ]
    assert cmd.wrappers == [["sudo"], ["env", "FOO=1"], ["timeout", "5"]]


@pytest.mark.parametrize(
    ("command", "inner"),
    [
        ("sudo -u root -E rm x", ["rm", "x"]),
        ("sudo --user=root rm x", ["rm", "x"]),
        ("env -i -u HOME A=1 B=2 rm x", ["rm", "x"]),
        ("env -- rm x", ["rm", "x"]),
        ("timeout -s KILL 10 rm x", ["rm", "x"]),
        ("timeout --signal=TERM -k 2 10s rm x", ["rm", "x"]),
        ("nice -n 10 rm x", ["rm", "x"]),
        ("nice -5 rm x", ["rm", "x"]),
        ("nohup rm x", ["rm", "x"]),
        ("xargs -0 -n1 -I{} rm {}", ["rm", "{}"]),
        ("xargs", ["echo"]),
        ("command rm x", ["rm", "x"]),
        ("time rm x", ["rm", "x"]),
        ("time -p rm x", ["rm", "x"]),
        ("exec -a name rm x", ["rm", "x"]),
        ("stdbuf -oL rm x", ["rm", "x"]),
        ("/usr/bin/sudo /usr/bin/env rm x", ["rm", "x"]),
        ("nice nohup timeout 3 sudo rm x", ["rm", "x"]),
        ("env -S 'rm -rf /'", ["rm", "-rf", "/"]),
    ],
)
def test_wrappers_are_unwrapped(command: str, inner: list[str]) -> None:
    cmd = only(command)
    assert cmd.argv == inner
    assert cmd.stages[0][0].endswith(command.split()[0].split("/")[-1])
    assert cmd.stages[-1] == inner


@pytest.mark.parametrize(
    ("command", "inner"),
    [
        ("setsid -w rm x", ["rm", "x"]),
        ("ionice -c 3 -n 7 rm x", ["rm", "x"]),
        ("flock -w 5 /tmp/lock rm x", ["rm", "x"]),
        ("flock /tmp/lock -c 'rm x'", ["rm", "x"]),
        ("script -qc 'rm x' /dev/null", ["rm", "x"]),
        ("su -c 'rm x' root", ["rm", "x"]),
        ("runuser -u nobody -- rm x", ["rm", "x"]),
        ("sg staff -c 'rm x'", ["rm", "x"]),
        ("watch -n 2 rm x", ["rm", "x"]),
        ("watch -x rm x", ["rm", "x"]),
        ("ssh -p 22 host rm x", ["rm", "x"]),
        ("parallel -j 2 rm x ::: a", ["rm", "x"]),
        ("busybox rm x", ["rm", "x"]),
        ("chrt 10 rm x", ["rm", "x"]),
        ("taskset 0x3 rm x", ["rm", "x"]),
        ("strace -f -o log rm x", ["rm", "x"]),
        ("doas -u root rm x", ["rm", "x"]),
        ("chroot /srv rm x", ["rm", "x"]),
    ],
)
def test_more_wrappers_are_unwrapped(command: str, inner: list[str]) -> None:
    cmd = only(command)
    assert cmd.argv == inner
    assert cmd.stages[0][0] == command.split()[0]


@pytest.mark.parametrize("command", ["ionice -p 123", "taskset -p 0x1 123", "ssh host", "flock 9"])
def test_wrappers_acting_on_nothing_run_nothing(command: str) -> None:
    assert only(command).argv == command.split()


def test_interactive_wrappers_read_stdin_and_are_opaque() -> None:
    for command in ("script /dev/null", "su -", "chroot /srv"):
        parsed = split_command(command)
        assert parsed.unparseable, command


def test_git_call_reads_global_options() -> None:
    call = git_call(["git", "-C", "sub", "-c", "Alias.Yolo=push", "--config-env=alias.x=V", "yolo"])
    assert call is not None
    assert call.canonical == ["git", "yolo"] and call.subcommand == "yolo"
    assert call.config == {"alias.yolo": "push"} and call.config_env == {"alias.x": "V"}
    assert call.directories == ["sub"]
    assert git_call(["got", "x"]) is None


@pytest.mark.parametrize(
    "command",
    ["command -v rm", "sudo -l", "sudo -e /etc/hosts", "env", "timeout 5", "nice"],
)
def test_wrappers_that_run_nothing_stay_as_they_are(command: str) -> None:
    cmd = only(command)
    assert cmd.argv == command.split()
    assert len(cmd.stages) == 1


# -- shell strings -------------------------------------------------------------------------------


def test_sh_c_is_parsed_recursively_with_the_shell_as_a_stage() -> None:
    parsed = split_command("bash -c \"ls; sh -c 'rm -rf /tmp/x'\"")
    assert [c.argv for c in parsed] == [["ls"], ["rm", "-rf", "/tmp/x"]]
    rm = parsed.commands[1]
    assert rm.stages == [
        ["bash", "-c", "ls; sh -c 'rm -rf /tmp/x'"],
        ["sh", "-c", "rm -rf /tmp/x"],
        ["rm", "-rf", "/tmp/x"],
    ]
    assert rm.depth == 2 and rm.text == "rm -rf /tmp/x"


@pytest.mark.parametrize(
    "command",
    [
        "sh -c 'git push origin main'",
        "bash -lc 'git push origin main'",
        "bash -e -o pipefail -c 'git push origin main' argv0",
        "sudo bash -c 'git push origin main'",
        "eval 'git push origin main'",
        "eval git push origin main",
        "xargs sh -c 'git push origin main'",
    ],
)
def test_shell_strings_reveal_the_inner_command(command: str) -> None:
    assert argvs(command)[-1] == ["git", "push", "origin", "main"]


def test_redirects_of_a_shell_apply_to_its_inner_commands() -> None:
    cmd = only("bash -c 'echo hi' > out.txt")
    assert cmd.argv == ["echo", "hi"]
    assert [str(r) for r in cmd.redirects] == ["> out.txt"]


def test_sh_reading_stdin_is_opaque() -> None:
    parsed = split_command("curl -s https://example.com/install | sh")
    assert parsed.unparseable
    assert parsed.commands[1].argv == ["sh"] and parsed.commands[1].unparseable
    assert not split_command("bash script.sh").unparseable


def test_nesting_is_bounded() -> None:
    command = "rm x"
    for _ in range(10):
        command = "sh -c " + shlex.quote(command)
    parsed = split_command(command)
    assert parsed.unparseable
    shallow = split_command("sh -c " + shlex.quote("sh -c " + shlex.quote("rm x")))
    assert not shallow.unparseable and shallow.commands[0].argv == ["rm", "x"]


def test_find_exec_and_trap_surface_their_commands() -> None:
    parsed = split_command("find . -name '*.pyc' -exec rm -f {} \\; -print")
    assert [c.argv for c in parsed] == [
        ["find", ".", "-name", "*.pyc", "-exec", "rm", "-f", "{}", ";", "-print"],
        ["rm", "-f", "{}"],
    ]
    assert argvs("find . -execdir sh -c 'git push' \\;")[-1] == ["git", "push"]
    assert argvs("trap 'rm -rf /tmp/x' EXIT")[-1] == ["rm", "-rf", "/tmp/x"]


# -- substitutions -------------------------------------------------------------------------------


def test_command_substitutions_yield_their_commands() -> None:
    parsed = split_command('echo $(rm x) `pwd` "$(git push)"')
    assert parsed.has_substitution
    assert [c.argv[0] for c in parsed] == ["echo", "rm", "pwd", "git"]
    assert parsed.commands[0].has_substitution
    assert not parsed.commands[1].has_substitution


def test_substitutions_in_assignments_redirects_and_loops_are_found() -> None:
    for source, inner in [
        ("X=$(rm a) ls", ["rm", "a"]),
        ("cat < $(rm b)", ["rm", "b"]),
        ("for f in $(rm c); do :; done", ["rm", "c"]),
        ("diff <(rm d) e", ["rm", "d"]),
    ]:
        parsed = split_command(source)
        assert parsed.has_substitution, source
        assert inner in [c.argv for c in parsed], source


def test_substitutions_we_cannot_look_into_are_unparseable() -> None:
    parsed = split_command("echo ${a:-$(rm x)}")
    assert parsed.has_substitution and parsed.unparseable
    heredoc = split_command("cat <<EOF\n$(rm x)\nEOF")
    assert heredoc.has_substitution and heredoc.unparseable
    quoted = split_command("cat <<'EOF'\n$(rm x)\nEOF")
    assert not quoted.has_substitution and not quoted.unparseable


def test_a_program_name_known_only_at_run_time_is_unparseable() -> None:
    for source in ("$CMD -rf /", "x=rm; $x -rf /", "$(echo rm) -rf /", 'bash -c "$CMD"'):
        assert split_command(source).unparseable, source


# -- redirections --------------------------------------------------------------------------------


def test_redirections_are_attached_to_their_command() -> None:
    cmd = only("make > out.log 2>> err.log < in.txt 2>&1")
    assert cmd.argv == ["make"]
    assert cmd.redirects == [
        Redirect(">", "out.log"),
        Redirect(">>", "err.log", fd=2),
        Redirect("<", "in.txt"),
        Redirect(">&", 1, fd=2),
    ]
    assert [r.writes_file for r in cmd.redirects] == [True, True, False, False]
    assert cmd.redirects[3].is_fd_dup and cmd.redirects[2].is_input


@pytest.mark.parametrize(
    ("source", "op", "target", "writes"),
    [
        ("a &> f", "&>", "f", True),
        ("a &>> f", "&>>", "f", True),
        ("a >| f", ">|", "f", True),
        ("a <> f", "<>", "f", True),
        ("a >&f", ">&", "f", True),
        ("a >&2", ">&", 2, False),
        ("a 3>&-", ">&", "-", False),
        ("a <<< 'text'", "<<<", "text", False),
    ],
)
def test_redirection_kinds(source: str, op: str, target: str | int, writes: bool) -> None:
    (redirect,) = only(source).redirects
    assert (redirect.op, redirect.target, redirect.writes_file) == (op, target, writes)


def test_compound_redirections_are_inherited() -> None:
    parsed = split_command("(cd a; ls) > out 2>&1; { pwd; } >> log")
    assert [[str(r) for r in c.redirects] for c in parsed] == [
        ["> out", "2>&1"],
        ["> out", "2>&1"],
        [">> log"],
    ]


def test_heredocs_quoted_and_unquoted() -> None:
    source = "cat > f.py <<'EOF'\nimport os\nprint('$(not run)')\nEOF\necho done"
    parsed = split_command(source)
    assert not parsed.unparseable and not parsed.has_substitution
    cat, echo = parsed.commands
    assert cat.text == "cat > f.py <<'EOF'"
    assert cat.redirects[0] == Redirect(">", "f.py")
    assert cat.redirects[1].op == "<<" and cat.redirects[1].target == "EOF"
    assert cat.redirects[1].heredoc == "import os\nprint('$(not run)')"
    assert echo.argv == ["echo", "done"]
    plain = only('python - <<"PY"\nprint(1)\nPY')
    assert plain.argv == ["python", "-"] and plain.redirects[0].heredoc == "print(1)"


# -- what bashlex cannot parse -------------------------------------------------------------------


def test_time_keyword_and_double_brackets_are_handled() -> None:
    parsed = split_command("time pytest -q && [[ -f x ]] && rm x")
    assert not parsed.unparseable
    assert [c.argv for c in parsed] == [["pytest", "-q"], ["[", "-f", "x", "]"], ["rm", "x"]]
    assert parsed.commands[0].stages[0] == ["time", "pytest", "-q"]


@pytest.mark.parametrize(
    "source",
    [
        "case $x in a) rm y;; esac",
        "echo $((1 + 2)); rm y",
        'echo "unterminated; rm y',
        "select x in a; do rm y; done",
        "coproc rm y",
    ],
)
def test_unparseable_input_falls_back_and_is_flagged(source: str) -> None:
    parsed = split_command(source)
    assert parsed.unparseable and parsed.error
    assert all(c.unparseable for c in parsed)
    # The crude split still finds ``rm`` so deny rules can fire on it.
    assert any(c.argv[:1] == ["rm"] or "rm" in c.argv for c in parsed), parsed.commands


def test_fallback_still_unwraps_and_sees_redirects_and_substitutions() -> None:
    parsed = split_command("case x in *) ;; esac; sudo rm -rf / > log; echo $(date)")
    assert parsed.unparseable and parsed.has_substitution
    rm = next(c for c in parsed if c.argv[:1] == ["rm"])
    assert rm.stages[0][0] == "sudo"
    assert rm.redirects == [Redirect(">", "log")]


def test_a_rewrite_that_does_not_land_on_a_heredoc_is_rejected() -> None:
    # The failing ``case`` forces the rewrite path; the quoted ``<<'EOF'`` is inside a string,
    # so blanking its quotes would change the structure: the parse must be thrown away.
    parsed = split_command("echo \"<<'EOF'\" ; case x in a) ;; esac")
    assert parsed.unparseable


@pytest.mark.parametrize(
    "garbage",
    ["(((", ")))", "&&", "| |", "`", "$(", "<<", "'", '"', "\\", "; ;", "a >", "${", "\x00"],
)
def test_never_raises(garbage: str) -> None:
    parsed = split_command(garbage)
    assert isinstance(parsed.commands, list)


# -- quote removal -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("plain", "plain"),
        ("'a'\"b\"c", "abc"),
        ("''x''", "x"),
        ("'it'\\''s'", "it's"),
        ('"a\\"b"', 'a"b'),
        ('"keep \\n as is"', "keep \\n as is"),
        ("a\\ b", "a b"),
        ("$'\\x72m'", "rm"),
        ("$'a\\tb'", "a\tb"),
        ('"$HOME/x"', "$HOME/x"),
        ('"x $(echo "a b") y"', 'x $(echo "a b") y'),
    ],
)
def test_unquote(raw: str, value: str) -> None:
    assert unquote(raw) == value


def test_argv_uses_correct_quote_removal() -> None:
    # bashlex 0.18 alone would report "it'\''s" here, and the shlex-quoted inner script below
    # would come out with stray quotes: patterns would silently stop matching.
    assert only("git commit -m 'it'\\''s done'").argv == ["git", "commit", "-m", "it's done"]
    nested = "sh -c " + shlex.quote("git push 'origin' \"main\"")
    assert only(nested).argv == ["git", "push", "origin", "main"]
    obfuscated = split_command("$'\\x72m' -rf /")
    assert obfuscated.commands[0].argv == ["rm", "-rf", "/"]
    assert obfuscated.unparseable


def test_shell_fed_by_heredoc_or_herestring_is_parsed() -> None:
    parsed = split_command("bash <<'EOF'\ncd repo\ngit push origin main\nEOF")
    assert [c.argv for c in parsed] == [["cd", "repo"], ["git", "push", "origin", "main"]]
    assert not parsed.unparseable
    assert argvs("sh <<< 'rm -rf build'") == [["rm", "-rf", "build"]]


@pytest.mark.parametrize(
    ("argv", "canonical"),
    [
        (["git", "-C", "repo", "push", "origin"], ["git", "push", "origin"]),
        (["git", "--no-pager", "-c", "a=b", "--git-dir=.git", "log"], ["git", "log"]),
        (["/usr/bin/git", "-P", "push"], ["git", "push"]),
        (["git", "push"], None),
        (["got", "-C", "x"], None),
    ],
)
def test_git_canonical(argv: list[str], canonical: list[str] | None) -> None:
    assert git_canonical(argv) == canonical
