"""`shmbroker users add|list|delete`: the users file a SASL listener checks logins
against (the logins themselves: tests/gateway/test_sasl.py)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from shmbroker import users
from shmbroker.cli import main


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.output


def test_add_list_and_delete_a_user(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    code, out = run("users", "add", "alice", "--data-dir", data, stdin="pw-1\n")
    assert (code, out) == (0, "Added user 'alice' (SCRAM-SHA-256, SCRAM-SHA-512)\n")
    code, out = run(
        "users", "add", "bob", "--data-dir", data, "--password", "pw-2",
        "--mechanism", "SCRAM-SHA-512", "--allow-topic", "orders-*=read,write",
        "--allow-group", "billing",
    )  # fmt: skip
    assert code == 0, out
    code, out = run("users", "list", "--data-dir", data)
    assert out.splitlines() == [
        "alice\tSCRAM-SHA-256,SCRAM-SHA-512\teverything",
        "bob\tSCRAM-SHA-512\torders-*=read,write group billing",
    ]
    stored = users.load(data)
    assert stored["alice"].check_password("pw-1")
    assert not stored["alice"].check_password("pw-2")
    assert stored["bob"].allows_topic("orders-eu", "write")
    assert not stored["bob"].allows_topic("orders-eu", "delete")
    assert not stored["bob"].allows_topic("payments", "read")
    assert (tmp_path / "data" / "users.json").stat().st_mode & 0o777 == 0o600
    assert b"pw-1" not in (tmp_path / "data" / "users.json").read_bytes()
    code, out = run("users", "list", "--data-dir", data, "--format", "json")
    assert [u["user"] for u in json.loads(out)] == ["alice", "bob"]
    assert run("users", "delete", "bob", "--data-dir", data) == (
        0, "Deleted user 'bob'\n",
    )  # fmt: skip
    assert set(users.load(data)) == {"alice"}


def test_a_new_password_keeps_the_allow_list_unless_told(tmp_path: Path) -> None:
    data = str(tmp_path)
    run("users", "add", "u", "--data-dir", data, "--password", "a",
        "--allow-topic", "t=read")  # fmt: skip
    code, out = run("users", "add", "u", "--data-dir", data, "--password", "b")
    assert (code, out) == (0, "Updated user 'u' (SCRAM-SHA-256, SCRAM-SHA-512)\n")
    assert users.load(data)["u"].allow == users.Allow({"t": ["read"]}, [])
    run("users", "add", "u", "--data-dir", data, "--password", "b", "--allow-all")
    assert users.load(data)["u"].allow is None


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    data = str(tmp_path)
    code, out = run("users", "delete", "nobody", "--data-dir", data)
    assert (code, out) == (1, "Error: no user 'nobody'\n")
    code, out = run("users", "add", "u", "--data-dir", data, "--password", "p",
                    "--allow-topic", "t=eat")  # fmt: skip
    assert code == 1
    assert "unknown operation 'eat'; known: read, write, create, delete" in out
    code, out = run("users", "add", "a,b", "--data-dir", data, "--password", "p")
    assert code == 1
    assert "user name 'a,b'" in out
    code, out = run("users", "add", "u", "--data-dir", data, stdin="\n")
    assert (code, out) == (1, "Error: user 'u': the password is empty\n")
    assert users.load(data) == {}
