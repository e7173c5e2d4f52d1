"""Telling the user's code from installed code, through symlinks either way."""
from __future__ import annotations

import json
import os
import sysconfig

from warmd.codepaths import is_user_file


def test_a_file_in_a_users_directory_is_the_users(tmp_path):
    (tmp_path / "mine.py").write_text("")
    assert is_user_file(str(tmp_path / "mine.py"))


def test_installed_code_is_not_the_users():
    assert not is_user_file(json.__file__)
    assert not is_user_file(os.path.join(sysconfig.get_paths()["purelib"], "anything.py"))


def test_a_symlinked_directory_is_judged_by_where_it_leads(tmp_path):
    (tmp_path / "stdlib").symlink_to(os.path.dirname(json.__file__))
    assert not is_user_file(str(tmp_path / "stdlib" / "decoder.py"))


def test_a_symlinked_file_is_judged_by_where_it_leads(tmp_path):
    (tmp_path / "linked.py").symlink_to(json.__file__)
    assert not is_user_file(str(tmp_path / "linked.py"))
