"""The manual pages stay true: every verb, option and config key is documented, and they lint clean.

The pages are read as roff source with the font and character escapes removed,
so the checks do not depend on a formatter being installed; only the lint
checks need mandoc (and groff).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from warmd import config
from warmd.ctl.main import build_parser as warmctl_parser
from warmd.daemon.main import build_parser as warmd_parser

MAN = Path(__file__).resolve().parent.parent / "man"
PAGES = ["warmd.8", "warmctl.1", "warmd.toml.5", "warmd-protocol.7", "warmd-openhcs.1"]


# ---------------------------------------------------------------- reading roff

_ESCAPES = [(re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""), (re.compile(r"\\\(aq"), "'"),
            (re.compile(r"\\\(dq"), '"'), (re.compile(r"\\\(em"), "--"), (re.compile(r"\\\(bu"), "*"),
            (re.compile(r"\\-"), "-"), (re.compile(r"\\&"), ""), (re.compile(r"\\e"), "\\"),
            (re.compile(r"\\ "), " ")]


def plain(text: str) -> str:
    for pattern, repl in _ESCAPES:
        text = pattern.sub(lambda _m, r=repl: r, text)
    return text


def _macro_text(line: str) -> str:
    """The words a macro line such as `.BR foo ( 1 )` puts on the page."""
    if not line.startswith((".", "'")):
        return line
    parts = line[1:].split(None, 1)
    if not parts or parts[0] in ("TP", "TQ", "PP", "P", "LP", "RS", "RE", "IP", "EX", "EE", "YS",
                                 "TS", "TE", "nf", "fi", "sp", "br", '\\"'):
        return ""
    args = parts[1] if len(parts) > 1 else ""
    words = re.findall(r'"[^"]*"|\S+', args)
    words = [w[1:-1] if w.startswith('"') else w for w in words]
    if parts[0] in ("BR", "RB", "BI", "IB", "RI", "IR"):
        return "".join(words)  # alternating fonts: the words touch
    return " ".join(words)


class Page:
    """A man page as sections of plain lines, and the tagged entries (.TP / .TQ) in each."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (MAN / name).read_text()
        self.sections: dict[str, list[str]] = {}
        current = ""
        for raw in self.source.splitlines():
            if raw.startswith(".SH"):
                current = plain(raw[3:].strip().strip('"'))
                self.sections[current] = []
                continue
            if raw.startswith(('.\\"', "'\\\"")):
                continue
            # keep .TP/.TQ/.RS/.RE markers so entries can be found; render the rest
            macro = raw[1:].split(None, 1)[0] if raw.startswith(".") and len(raw) > 1 else ""
            if macro in ("TP", "TQ", "RS", "RE"):
                self.sections.setdefault(current, []).append("." + macro)
            else:
                self.sections.setdefault(current, []).append(plain(_macro_text(raw)))

    @property
    def text(self) -> str:
        return "\n".join(line for lines in self.sections.values() for line in lines)

    def section(self, title: str) -> list[str]:
        assert title in self.sections, f"{self.name} has no section {title!r}"
        return self.sections[title]

    def entries(self, title: str, *, depth: int = 0) -> list[tuple[str, str]]:
        """(tag, body) of each .TP/.TQ entry at nesting ``depth`` (inside .RS ... .RE) of a section."""
        out: list[tuple[str, list[str]]] = []
        level = 0
        lines = self.section(title)
        i = 0
        while i < len(lines):
            line = lines[i]
            if line == ".RS":
                level += 1
            elif line == ".RE":
                level -= 1
            elif line in (".TP", ".TQ") and level == depth and i + 1 < len(lines):
                out.append((lines[i + 1].strip(), []))
                i += 2
                continue
            if out and level >= depth:
                out[-1][1].append(line)
            i += 1
        return [(tag, "\n".join(body)) for tag, body in out]


def mentions(text: str, word: str) -> bool:
    """``word`` appears as a whole token (an option, a verb, a key)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# ---------------------------------------------------------------- what --help shows

def shown_options(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings ``--help`` lists for ``parser`` (suppressed ones are hidden)."""
    return [opt for action in parser._actions if action.option_strings and action.help != argparse.SUPPRESS
            for opt in action.option_strings]


def shown_verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: sub.choices[choice.dest] for choice in sub._choices_actions}


WARMCTL_VERBS = shown_verbs(warmctl_parser())


def test_introspection_matches_real_help_output():
    """The parser the checks inspect is the one the installed command prints."""
    top = subprocess.run([sys.executable, "-m", "warmd.ctl", "--help"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    for verb in WARMCTL_VERBS:
        assert mentions(top, verb), f"warmctl --help does not list {verb}"
    for opt in shown_options(warmctl_parser()):
        assert mentions(top, opt)
    daemon = subprocess.run([sys.executable, "-m", "warmd", "--help"], capture_output=True, text=True,
                            timeout=60, check=True).stdout
    for opt in shown_options(warmd_parser()):
        assert mentions(daemon, opt)


# ---------------------------------------------------------------- warmctl(1)

def _verb_entries() -> dict[str, str]:
    entries = Page("warmctl.1").entries("COMMANDS")
    return {tag.split()[0]: body for tag, body in entries}


def test_warmctl_page_documents_every_verb():
    documented = _verb_entries()
    missing = [v for v in WARMCTL_VERBS if v not in documented]
    assert not missing, f"verbs missing from man/warmctl.1 COMMANDS: {missing}"
    stale = [v for v in documented if v not in WARMCTL_VERBS]
    assert not stale, f"man/warmctl.1 documents verbs warmctl does not have: {stale}"


@pytest.mark.parametrize("verb", sorted(WARMCTL_VERBS))
def test_warmctl_page_documents_each_verb_option(verb):
    entries = {tag.split()[0]: (tag, body) for tag, body in Page("warmctl.1").entries("COMMANDS")}
    assert verb in entries, f"{verb} is not documented in man/warmctl.1"
    tag, body = entries[verb]
    lines = body.splitlines()
    # each option in the verb's synopsis line and with an entry of its own under the verb
    nested = "\n".join(lines[i + 1] for i, line in enumerate(lines[:-1]) if line in (".TP", ".TQ"))
    # -h/--help of each verb is documented once, under OPTIONS
    options = [o for o in shown_options(WARMCTL_VERBS[verb]) if o not in ("-h", "--help")]
    missing = [o for o in options if not (mentions(tag, o) and mentions(nested, o))]
    assert not missing, f"man/warmctl.1: the {verb} entry does not describe {missing}"


def test_warmctl_page_documents_global_options():
    page = Page("warmctl.1")
    tags = "\n".join(tag for tag, _ in page.entries("OPTIONS"))
    missing = [o for o in shown_options(warmctl_parser()) if not mentions(tags, o)]
    assert not missing, f"man/warmctl.1 OPTIONS lacks {missing}"


def test_warmctl_page_documents_every_exit_code():
    from warmd.ctl import exitcodes
    codes = {v for k, v in vars(exitcodes).items() if k.isupper() and isinstance(v, int)}
    tags = {tag for tag, _ in Page("warmctl.1").entries("EXIT STATUS")}
    missing = sorted(str(c) for c in codes if str(c) not in tags)
    assert not missing, f"man/warmctl.1 EXIT STATUS lacks {missing}"
    stale = sorted(t for t in tags if t.isdigit() and int(t) not in codes)
    assert not stale, f"man/warmctl.1 documents exit codes ctl/exitcodes.py lacks: {stale}"


# ---------------------------------------------------------------- warmd(8)

def test_warmd_page_documents_every_option():
    page = Page("warmd.8")
    tags = "\n".join(tag for tag, _ in page.entries("OPTIONS"))
    shown = shown_options(warmd_parser())
    missing = [o for o in shown if not mentions(tags, o)]
    assert not missing, f"man/warmd.8 OPTIONS lacks {missing}"
    documented = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", tags))
    stale = sorted(documented - set(shown))
    assert not stale, f"man/warmd.8 documents options warmd does not have: {stale}"


def test_warmd_page_documents_exit_codes_and_environment():
    from warmd.daemon import main
    page = Page("warmd.8")
    tags = {tag for tag, _ in page.entries("EXIT STATUS")}
    for code in (0, main.EXIT_RUNNING, main.EXIT_CONFIG):
        assert str(code) in tags, f"man/warmd.8 EXIT STATUS lacks {code}"
    env = "\n".join(page.section("ENVIRONMENT"))
    for var in ("WARMD_SOCKET", "WARMD_CONFIG", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME",
                "LISTEN_FDS", "NOTIFY_SOCKET"):
        assert mentions(env, var), f"man/warmd.8 ENVIRONMENT lacks {var}"
    signals = "\n".join(page.section("SIGNALS"))
    for sig in ("SIGTERM", "SIGINT", "SIGHUP"):
        assert mentions(signals, sig)


# ---------------------------------------------------------------- warmd-openhcs(1)

def test_warmd_openhcs_page_documents_every_option_and_exit_code():
    from warmd.openhcs import main
    page = Page("warmd-openhcs.1")
    tags = "\n".join(tag for tag, _ in page.entries("OPTIONS"))
    shown = shown_options(main.parser())
    missing = [o for o in shown if not mentions(tags, o)]
    assert not missing, f"man/warmd-openhcs.1 OPTIONS lacks {missing}"
    documented = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", tags))
    assert not sorted(documented - set(shown)), "man/warmd-openhcs.1 documents options it lacks"
    codes = {tag for tag, _ in page.entries("EXIT STATUS")}
    assert {"0", "1", str(main.EXIT_TAKEN), str(main.EXIT_CONFIG)} <= codes


# ---------------------------------------------------------------- warmd.toml(5)

def _expected_default(parser, value) -> str:
    if value and (parser in (config.parse_size, config.parse_frame_size)
                  or getattr(parser, "is_size", False)):
        for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value % scale == 0:
                return f"{value // scale} {unit}"
        return str(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if value == "":
        return "unset"
    return str(value)


def _key_entries() -> dict[str, str]:
    page = Page("warmd.toml.5")
    out = {}
    for table in config.SCHEMA:
        for tag, body in page.entries(f"[{table}]"):
            out[f"{table}.{tag.split()[0]}"] = tag + "\n" + body
    return out


def test_config_page_documents_every_key():
    documented = _key_entries()
    keys = config.all_keys()
    missing = [k for k in keys if k not in documented]
    assert not missing, f"keys missing from man/warmd.toml.5: {missing}"
    stale = [k for k in documented if k not in keys]
    assert not stale, f"man/warmd.toml.5 documents keys config.SCHEMA lacks: {stale}"


@pytest.mark.parametrize("key", config.all_keys())
def test_config_page_states_each_default(key):
    table, name = key.split(".")
    parser, default = config.SCHEMA[table][name]
    entry = _key_entries()[key]
    found = re.search(r"default:\s*(.+?)\)", " ".join(entry.split()))
    assert found, f"man/warmd.toml.5: {key} states no default"
    assert found.group(1).strip().strip('"') == _expected_default(parser, default), \
        f"man/warmd.toml.5: {key} default is {found.group(1)!r}, config.SCHEMA says {default!r}"


def test_config_page_examples_are_valid_configs(tmp_path):
    examples = re.findall(r"^\.EX\n(.*?)^\.EE", Page("warmd.toml.5").source, re.M | re.S)
    assert examples, "man/warmd.toml.5 has no examples"
    for i, example in enumerate(examples):
        path = tmp_path / f"example{i}.toml"
        path.write_text(plain(example))
        config.load(path, required=True)  # raises ConfigError naming the bad key


# ---------------------------------------------------------------- warmd-protocol(7)

def test_protocol_page_documents_messages_and_error_codes():
    from warmd import protocol
    text = Page("warmd-protocol.7").text
    for message in sorted(protocol.CLIENT_MESSAGES):
        assert mentions(text, message), f"man/warmd-protocol.7 lacks message {message}"
    codes = [v for k, v in vars(protocol).items() if k.startswith("E_") and isinstance(v, str)]
    errors = {tag for tag, _ in Page("warmd-protocol.7").entries("DESCRIPTION")}
    missing = [c for c in codes if c not in errors]
    assert not missing, f"man/warmd-protocol.7 does not describe error codes {missing}"


def test_pages_state_the_protocol_version_and_limits_the_code_has():
    from warmd import protocol
    from warmd.client import reconnect
    text = " ".join(Page("warmd-protocol.7").text.split())
    versions = re.findall(r"(?:protocol version \(|version )(\d+)", text)
    assert versions and set(versions) == {str(protocol.PROTOCOL_VERSION)}, \
        f"man/warmd-protocol.7 says protocol version {sorted(set(versions))}, " \
        f"the code speaks {protocol.PROTOCOL_VERSION}"
    assert f"1 to {protocol.MAX_HEADER}" in text
    warmd_page = " ".join(Page("warmd.8").text.split())
    assert f"for {reconnect.RECONNECT_FOR:g} s" in warmd_page


@pytest.mark.parametrize("page, parser", [("warmctl.1", warmctl_parser),
                                          ("warmd-openhcs.1", "warmd.openhcs.main")])
def test_each_stated_option_default_is_the_parsers(page, parser):
    """Every option entry that says "(default X)" says what argparse's default is."""
    if isinstance(parser, str):
        import importlib
        parser = importlib.import_module(parser).parser
    root = parser()
    defaults: dict[str, object] = {}
    for each in [root, *_subparsers(root)]:
        for action in each._actions:
            for opt in action.option_strings:
                defaults.setdefault(opt, action.default)
    doc = Page(page)
    entries = [e for title in doc.sections for depth in (0, 1) for e in doc.entries(title, depth=depth)]
    checked = 0
    for tag, body in entries:
        stated = re.search(r"\(default:? ([\w.]+)\)", " ".join(body.split()))
        option = re.match(r"(?:-\w, )?(--[a-z][\w-]*)", tag)  # an option's own entry
        if not stated or not option or option.group(1) not in defaults:
            continue
        default = defaults[option.group(1)]
        assert stated.group(1) in (f"{default}", f"{default}".lower()), \
            f"man/{page}: {option.group(1)} says default {stated.group(1)}, the parser has {default!r}"
        checked += 1
    assert checked, f"man/{page}: no option default found to check"


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_subparsers(sub)]
    return found


# ---------------------------------------------------------------- lint

@pytest.mark.parametrize("page", PAGES)
def test_page_is_mandoc_lint_clean(page):
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        pytest.skip("mandoc is not installed (Debian: apt-get install mandoc); .ci/run installs it")
    out = subprocess.run([mandoc, "-Tlint", str(MAN / page)], capture_output=True, text=True)
    assert out.stdout + out.stderr == "", f"mandoc -Tlint {page}:\n{out.stdout}{out.stderr}"


@pytest.mark.parametrize("page", PAGES)
def test_page_formats_without_groff_warnings(page):
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (Debian: groff-base)")
    out = subprocess.run([groff, "-t", "-man", "-ww", "-z", str(MAN / page)], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stderr == "", f"groff warnings for {page}:\n{out.stderr}"
