"""Distribution packaging: shell completion in step with warmctl, the Debian and RPM
recipes in step with the tree, and (slow) a .deb that builds, passes lintian and runs.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import pytest

import warmd
from warmd.ctl.main import build_parser

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
BASH = PACKAGING / "completion" / "bash" / "warmctl"
ZSH = PACKAGING / "completion" / "zsh" / "_warmctl"
SPEC = PACKAGING / "rpm" / "warmd.spec"
DEBIAN = PACKAGING / "debian"
MAN_PAGES = sorted(p.name for p in (REPO / "man").iterdir() if re.search(r"\.[1-8]$", p.name))
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {c.dest: sub.choices[c.dest] for c in sub._choices_actions}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
            for o in a.option_strings} - {"-h", "--help"}


VERBS = _verbs()


# ---------------------------------------------------------------- shell completion

def _case_branches(text: str) -> dict[str, str]:
    """verb -> the text of its branch in the completion's `case` over verbs."""
    branches = {}
    for patterns, body in re.findall(r"^\s*([\w|\- ]+)\)(.*?);;", text, re.M | re.S):
        for name in (p.strip() for p in patterns.split("|")):
            if name in VERBS:
                branches[name] = body
    return branches


def test_bash_completion_knows_every_verb_and_option():
    text = BASH.read_text()
    verbs = re.search(r'local verbs="([^"]*)"', text).group(1).split()
    assert sorted(verbs) == sorted(VERBS), "packaging/completion/bash/warmctl: verbs differ from warmctl --help"
    top = _options(build_parser()) | {"-h", "--help"}
    global_opts = set(re.search(r'local global_opts="([^"]*)"', text).group(1).split())
    assert global_opts == top
    start = text.index('local opts=""')
    branches = _case_branches(text[start:text.index("esac", start)])
    for verb, parser in VERBS.items():
        assert verb in branches, f"bash completion has no case for {verb}"
        opts = set(re.search(r'opts="([^"]*)"', branches[verb]).group(1).split())
        assert opts == _options(parser), f"bash completion options of {verb}: {opts} != {_options(parser)}"


def test_zsh_completion_knows_every_verb_and_option():
    text = ZSH.read_text()
    described = set(re.findall(r"^\s*'([\w-]+):", text, re.M))
    assert set(VERBS) <= described, f"zsh completion lacks verbs {set(VERBS) - described}"
    branches = _case_branches(text[text.index("case $words[1] in"):])
    for verb, parser in VERBS.items():
        assert verb in branches, f"zsh completion has no case for {verb}"
        # each spec: an optional (exclusion list), * when repeatable, the option, [its help]
        opts = set(re.findall(r"'(?:\([^)]*\))?\*?(--?[\w-]+)\[", branches[verb]))
        assert opts == _options(parser), f"zsh completion options of {verb}: {opts} != {_options(parser)}"


def test_completion_scripts_parse():
    subprocess.run(["bash", "-n", str(BASH)], check=True)
    if shutil.which("zsh"):
        subprocess.run(["zsh", "-n", str(ZSH)], check=True)


def test_bash_completion_completes_verbs_and_options():
    script = f"""
source {BASH}
complete_line() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMPREPLY=(); _warmctl;
                  echo "${{COMPREPLY[*]}}"; }}
complete_line warmctl ''
complete_line warmctl cancel --
complete_line warmctl --socket /nonexistent/warmd.sock wait ''
"""
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         timeout=60, env={**os.environ, "PATH": f"{Path(sys.executable).parent}:"
                                          f"{os.environ.get('PATH', '')}"}).stdout.splitlines()
    assert out[0].split() == list(VERBS)
    assert set(out[1].split()) == _options(VERBS["cancel"]) | {"--help"}
    assert out[2] == ""  # no daemon there: no job ids, and none is started


# ---------------------------------------------------------------- Debian and RPM recipes

def test_package_versions_match_the_code():
    changelog = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert re.match(rf"warmd \({re.escape(warmd.__version__)}(-\d+)?\) ", changelog), \
        f"packaging/debian/changelog starts {changelog!r}, the code is {warmd.__version__}"
    spec_version = re.search(r"^Version:\s*(\S+)", SPEC.read_text(), re.M).group(1)
    assert spec_version == warmd.__version__, "packaging/rpm/warmd.spec Version differs from the code"


def test_packages_ship_every_man_page_and_completion():
    manpages = (DEBIAN / "warmd.manpages").read_text().split()
    assert sorted(Path(p).name for p in manpages) == MAN_PAGES
    install = (DEBIAN / "warmd.install").read_text()
    spec = SPEC.read_text()
    for path in (BASH, ZSH):
        rel = str(path.relative_to(REPO))
        assert rel in install, f"packaging/debian/warmd.install does not ship {rel}"
        assert rel in spec, f"packaging/rpm/warmd.spec does not ship {rel}"
    for page in MAN_PAGES:
        assert f"man/{page}" in spec, f"packaging/rpm/warmd.spec does not ship man/{page}"


def test_debian_depends_on_what_pyproject_requires():
    import tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    control = (DEBIAN / "control").read_text()
    debian_name = {"cloudpickle": "python3-cloudpickle", "psutil": "python3-psutil",
                   "systemd-python": "python3-systemd", "numpy": "python3-numpy",
                   "orjson": None}  # not in Debian 12: warmd.protocol falls back to json
    for dep in deps:
        name = re.match(r"[\w-]+", dep).group(0)
        assert name in debian_name, f"no Debian package known for the dependency {dep!r}"
        if debian_name[name] is None:
            continue
        assert re.search(rf"\b{debian_name[name]}\b", control), f"control does not depend on {debian_name[name]}"
    floor = re.search(r"cloudpickle>=([\d.]+)", " ".join(deps)).group(1)
    assert f"python3-cloudpickle (>= {floor})" in control


def test_rpm_spec_parses():
    rpmspec = shutil.which("rpmspec")
    if rpmspec is None:
        pytest.skip("rpmspec is not installed (Debian: apt-get install rpm); .ci/run installs it")
    out = subprocess.run([rpmspec, "-P", str(SPEC)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    parsed = out.stdout
    for scriptlet, macro in (("%post", "%systemd_user_post"), ("%preun", "%systemd_user_preun"),
                             ("%postun", "%systemd_user_postun")):
        assert re.search(rf"^{scriptlet}\n(.*\n)*?{macro} warmd\.socket warmd\.service$", parsed, re.M), \
            f"{scriptlet} lacks {macro}"
    assert "/usr/lib/systemd/user/warmd.socket" in parsed


# ---------------------------------------------------------------- the .deb (slow)

def _missing_build_tools() -> str | None:
    env = {"PATH": SYSTEM_PATH}
    for tool in ("dpkg-buildpackage", "dpkg-checkbuilddeps", "dh", "dh_python3"):
        if shutil.which(tool, path=SYSTEM_PATH) is None:
            return f"{tool} is not installed"
    check = subprocess.run(["dpkg-checkbuilddeps", str(DEBIAN / "control")], capture_output=True,
                           text=True, env=env)
    if check.returncode != 0:
        return (check.stderr.strip().splitlines() or ["build dependencies missing"])[-1]
    return None


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    why = _missing_build_tools()
    if why:
        pytest.skip(f"cannot build the .deb: {why}. On Debian, as root: apt-get install "
                    "--no-install-recommends debhelper dh-python pybuild-plugin-pyproject python3-all "
                    "python3-setuptools lintian (.ci/run does this)")
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    build = subprocess.run([str(PACKAGING / "build-deb.sh"), str(out)], capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, f"build-deb.sh failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    debs = list(out.glob("warmd_*_all.deb"))
    assert len(debs) == 1, f"expected one warmd .deb in {out}: {list(out.iterdir())}"
    print(f"built {debs[0].name} in {time.monotonic() - started:.1f} s")
    return debs[0]


@pytest.fixture(scope="module")
def installed(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


@pytest.mark.slow
def test_deb_installs_units_man_pages_and_completion(installed):
    units = installed / "usr/lib/systemd/user"
    assert (units / "warmd.socket").is_file()
    service = (units / "warmd.service").read_text()
    assert re.search(r"^ExecStart=/usr/bin/warmd$", service, re.M), service
    assert (units / "warmd.socket").read_text() == (REPO / "systemd/warmd.socket").read_text()
    for page in MAN_PAGES:
        section = page.rsplit(".", 1)[1]
        assert (installed / f"usr/share/man/man{section}/{page}.gz").is_file(), page
    assert (installed / "usr/share/bash-completion/completions/warmctl").is_file()
    assert (installed / "usr/share/zsh/vendor-completions/_warmctl").is_file()
    for command in ("warmd", "warmctl"):
        assert os.access(installed / "usr/bin" / command, os.X_OK)


@pytest.mark.slow
def test_deb_depends_on_debian_packages(deb):
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends", "Suggests"], capture_output=True,
                            text=True, check=True).stdout
    for package in ("python3-cloudpickle", "python3-psutil", "python3-systemd", "python3-numpy"):
        assert package in fields
    assert "python3-cupy" in fields


@pytest.mark.slow
def test_deb_is_lintian_clean(deb):
    lintian = shutil.which("lintian", path=SYSTEM_PATH)
    if lintian is None:
        pytest.skip("lintian is not installed (apt-get install lintian); .ci/run installs it")
    out = subprocess.run([lintian, "--fail-on", "error", "--no-tag-display-limit", str(deb)],
                         capture_output=True, text=True, timeout=600, env={"PATH": SYSTEM_PATH})
    assert out.returncode == 0, f"lintian:\n{out.stdout}{out.stderr}"
    assert not re.search(r"^E: ", out.stdout, re.M), out.stdout


def _debian_env(root: Path, **extra: str) -> dict[str, str]:
    """Debian's /usr/bin/python3 with the package's files first and nothing of this venv."""
    return {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": str(root / "home"),
            "PYTHONPATH": str(root / "usr/lib/python3/dist-packages"), **extra}


def _system_python() -> str:
    python = "/usr/bin/python3"
    if not os.access(python, os.X_OK):
        pytest.skip("no /usr/bin/python3: the .deb's commands run with Debian's Python")
    return python


@pytest.mark.slow
def test_installed_warmctl_reports_its_version(installed):
    python = _system_python()
    for command in ("warmctl", "warmd"):
        out = subprocess.run([python, str(installed / "usr/bin" / command), "--version"],
                             capture_output=True, text=True, timeout=60, env=_debian_env(installed))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{command} {warmd.__version__}"
        # the module came from the package, not from this checkout or a virtual environment
        where = subprocess.run([python, "-c", "import warmd; print(warmd.__file__)"], capture_output=True,
                               text=True, timeout=60, env=_debian_env(installed)).stdout.strip()
        assert where.startswith(str(installed)), where


@pytest.mark.slow
def test_installed_package_runs_a_job_with_debians_libraries(installed):
    """The packaged daemon, worker and client, on Debian's cloudpickle, psutil and systemd."""
    python = _system_python()
    probe = subprocess.run([python, "-c", "import cloudpickle, psutil, systemd.daemon"],
                           capture_output=True, text=True, env={"PATH": SYSTEM_PATH})
    if probe.returncode != 0:
        pytest.skip("Debian's python3-cloudpickle, python3-psutil and python3-systemd are not all "
                    "installed (.ci/run installs them when root)")
    home = Path(tempfile.mkdtemp(prefix="wd-deb-", dir="/tmp"))  # short: AF_UNIX path limit
    run = home / "run"
    run.mkdir(mode=0o700)
    (home / "config/warmd").mkdir(parents=True)
    # idle_exit: the daemon goes away by itself even if this test dies before shutdown
    (home / "config/warmd/warmd.toml").write_text(
        '[daemon]\nidle_exit = 30\n[workers]\nspares = 0\ndevices = "none"\n')
    env = _debian_env(installed, XDG_RUNTIME_DIR=str(run), XDG_CONFIG_HOME=str(home / "config"),
                      XDG_STATE_HOME=str(home / "state"))
    warmctl = [python, str(installed / "usr/bin/warmctl")]
    try:
        out = subprocess.run([*warmctl, "exec", "-c", "import sys, cloudpickle; print(6 * 7); "
                              "print(cloudpickle.__file__); sys.exit(3)"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 3, f"{out.stdout}\n{out.stderr}\n{_log(home)}"
        lines = out.stdout.splitlines()
        assert lines[0] == "42"
        assert lines[1].startswith("/usr/lib/python3/dist-packages/cloudpickle/"), lines[1]
        ping = subprocess.run([*warmctl, "--no-autostart", "ping", "--json"], capture_output=True,
                              text=True, timeout=60, env=env)
        assert ping.returncode == 0 and '"autostart"' in ping.stdout, ping.stderr
    finally:
        subprocess.run([*warmctl, "shutdown"], capture_output=True, timeout=60, env=env)
        shutil.rmtree(home, ignore_errors=True)


def _log(home: Path) -> str:
    log = home / "state/warmd/warmd.log"
    return log.read_text(errors="replace") if log.exists() else "(no daemon log)"
