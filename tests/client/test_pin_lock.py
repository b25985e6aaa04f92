"""`cunsync tablet pin` and the tablet app: the PIN is never changed under a database someone has open.

The app keeps the database open while it is unlocked; a PIN change then would leave it writing to a
replaced file (a plaintext database is encrypted into a new one) or with a key that no longer fits (an
encrypted one is re-keyed), and the worker's next entries would be lost. So the change is refused, in
plain English, and nothing is changed; once the app is locked or stopped it goes through. While a PIN
change runs, the app does not unlock (it says so in Chinese) and other commands do not open the tablet.
Commands other than `tablet pin` keep working beside the app. No node runs here (see ``test_ui``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import client.tablet
from client.cli import cli
from client.tablet import DatabaseInUse, NotEncrypted, PinChanging, PinRequired, Tablet, WrongPin
from client.ui import TabletApp, create_app
from sync.store import is_encrypted
from test_ui import ORIGIN, PIN, PORT, SAME, TestClient, people, post, set_up_tablet

NEW_PIN = "135799"
IN_USE = "Close the tablet app first"


@pytest.fixture(params=[None, PIN], ids=["plaintext", "encrypted"])
def pin(request: pytest.FixtureRequest) -> str | None:
    "The PIN the tablet was set up with: none (a tablet from before PINs) or the worker's"
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def db(tmp_path: Path, pin: str | None) -> Path:
    path = tmp_path / "tablet.db"
    set_up_tablet(path, pin=pin)
    return path


@pytest.fixture
def app(db: Path, pin: str | None) -> Iterator[tuple[TabletApp, TestClient]]:
    "The tablet app, unlocked as the worker leaves it: the database open in it"
    tapp = TabletApp(db, port=PORT, backoff=0.01)
    with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
        if pin is not None:
            assert post(c, tapp, "/unlock", {"pin": pin}).status_code == 303
        assert tapp.unlocked
        yield tapp, c
    tapp.close()


def tablet_pin(db: Path, pin: str | None, new: str = NEW_PIN) -> Result:
    env = {"CUNSYNC_NEW_PIN": new, "CUNSYNC_PIN": pin}
    return CliRunner().invoke(cli, ["tablet", "pin", "--db", str(db)], env=env)


def names(db: Path, pin: str | None) -> list[str]:
    with Tablet(db, pin=pin) as tab:
        return sorted(str(p.data["name"]) for p in tab.list("person"))


def register(c: TestClient, tapp: TabletApp, name: str) -> None:
    r = post(c, tapp, "/people/new", {"name": name, "searched": name})
    assert r.status_code == 303 and "done=created" in r.headers["location"]


def test_tablet_pin_is_refused_while_the_app_has_the_database_open(
        db: Path, pin: str | None, app: tuple[TabletApp, TestClient]) -> None:
    tapp, c = app
    r = tablet_pin(db, pin)
    assert r.exit_code == 1
    assert IN_USE in r.output and "nothing was changed" in r.output
    assert is_encrypted(db) == (pin is not None)
    register(c, tapp, "李四")  # the app goes on saving, to the same file with the same key
    assert set(people(tapp)) == {"张三", "李四"}
    tapp.close()
    assert names(db, pin) == ["张三", "李四"]  # still there, under the PIN it had (or none)
    with pytest.raises(NotEncrypted if pin is None else WrongPin):
        Tablet(db, pin=NEW_PIN)


def test_after_the_app_stops_tablet_pin_works(db: Path, pin: str | None, app: tuple[TabletApp, TestClient]) -> None:
    tapp, c = app
    register(c, tapp, "李四")
    tapp.close()
    r = tablet_pin(db, pin)
    assert r.exit_code == 0, r.output
    assert names(db, NEW_PIN) == ["张三", "李四"]
    with pytest.raises(PinRequired if pin is None else WrongPin):
        Tablet(db, pin=pin)


def test_locking_the_app_on_its_page_lets_the_pin_change(
        db: Path, pin: str | None, app: tuple[TabletApp, TestClient]) -> None:
    "What the refusal suggests: the lock button closes the database; the new PIN then unlocks the app"
    tapp, c = app
    register(c, tapp, "李四")
    assert post(c, tapp, "/lock", {}).status_code == 303 and not tapp.unlocked
    assert tablet_pin(db, pin).exit_code == 0
    assert post(c, tapp, "/unlock", {"pin": NEW_PIN}).status_code == 303
    register(c, tapp, "王五")
    tapp.close()
    assert names(db, NEW_PIN) == ["张三", "李四", "王五"]


def test_other_commands_work_beside_the_app(db: Path, pin: str | None, app: tuple[TabletApp, TestClient]) -> None:
    "Only the PIN change needs the database to itself; sync, status and adding records share it (WAL)"
    tapp, c = app
    runner, env = CliRunner(), {"CUNSYNC_PIN": pin}
    r = runner.invoke(cli, ["person", "add", "--db", str(db), "--name", "赵六"], env=env)
    assert r.exit_code == 0, r.output
    assert "赵六" in people(tapp)
    r = runner.invoke(cli, ["status", "--db", str(db)], env=env)
    assert r.exit_code == 0 and "person 2" in r.output
    r = runner.invoke(cli, ["sync", "--db", str(db), "--retries", "0", "--silent"], env=env)
    assert r.exit_code == 1 and "did not answer" in r.output  # its node is a closed port; it was not refused
    register(c, tapp, "李四")


def pin_change_running(monkeypatch: pytest.MonkeyPatch, pin: str | None,
                       meanwhile: Callable[[], Any]) -> list[bool]:
    """Make the next PIN change run ``meanwhile`` in the middle of it: in the step that encrypts a
    plaintext database, or the one that derives an encrypted one's new key (the only seams). The list
    it returns says whether it ran."""
    seam = "_encrypt_plaintext" if pin is None else "key_literal"
    real = getattr(client.tablet, seam)
    ran: list[bool] = []

    def step(*args: Any, **kw: Any) -> Any:
        if not ran:
            ran.append(True)
            meanwhile()
        return real(*args, **kw)

    monkeypatch.setattr(client.tablet, seam, step)
    return ran


def test_the_app_does_not_unlock_while_the_pin_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "tablet.db"
    set_up_tablet(db, pin=PIN)
    tapp = TabletApp(db, port=PORT)  # locked: the lock page asks for the PIN
    seen: dict[str, Any] = {}
    with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as c:
        def meanwhile() -> None:
            seen["page"] = post(c, tapp, "/unlock", {"pin": PIN})
            seen["unlocked"] = tapp.unlocked
            seen["status"] = CliRunner().invoke(cli, ["status", "--db", str(db)], env={"CUNSYNC_PIN": PIN})

        ran = pin_change_running(monkeypatch, PIN, meanwhile)
        with Tablet(db, pin=PIN) as tab:
            tab.change_pin(NEW_PIN)
        assert ran
        assert seen["page"].status_code == 409 and "正在更改本平板的 PIN，请等更改完成后再解锁。" in seen["page"].text
        assert seen["unlocked"] is False
        assert seen["status"].exit_code == 1 and "is being changed" in seen["status"].output
        # once it is done, the new PIN unlocks
        assert post(c, tapp, "/unlock", {"pin": NEW_PIN}).status_code == 303
        assert set(people(tapp)) == {"张三"}
    tapp.close()


def test_the_app_does_not_start_while_a_plaintext_tablet_is_encrypted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "tablet.db"
    set_up_tablet(db, pin=None)
    refused: list[str] = []

    def meanwhile() -> None:
        with pytest.raises(PinChanging) as e:
            TabletApp(db, port=PORT)  # a plaintext tablet unlocks at start: not now
        refused.append(str(e.value))

    ran = pin_change_running(monkeypatch, None, meanwhile)
    with Tablet(db) as tab:
        tab.change_pin(NEW_PIN)
    assert ran and "try again when `cunsync tablet pin` has finished" in refused[0]
    assert names(db, NEW_PIN) == ["张三"]


def test_a_refused_change_keeps_its_tablet_counted_as_open(db: Path, pin: str | None) -> None:
    "The tablet whose PIN change was refused still holds its share: a third cannot change the PIN under it"
    first, second = Tablet(db, pin=pin), Tablet(db, pin=pin)
    try:
        with pytest.raises(DatabaseInUse):
            first.change_pin(NEW_PIN)
        second.close()
        with Tablet(db, pin=pin) as third, pytest.raises(DatabaseInUse):
            third.change_pin(NEW_PIN)
        first.create("person", {"name": "李四"})
    finally:
        first.close()
        second.close()
    with Tablet(db, pin=pin) as alone:
        alone.change_pin(NEW_PIN)
    assert names(db, NEW_PIN) == ["张三", "李四"]


def test_tablets_that_fail_to_open_or_close_hold_nothing(db: Path, pin: str | None) -> None:
    "A wrong PIN, a refused change, a failed command: none leaves the database held or a file open"
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(NotEncrypted if pin is None else WrongPin):
        Tablet(db, pin="000000")
    with Tablet(db, pin=pin) as tab, pytest.raises(DatabaseInUse):
        with Tablet(db, pin=pin):
            tab.change_pin(NEW_PIN)
    r = CliRunner().invoke(cli, ["need", "add", "--db", str(db), "--person", "not-a-record-id",
                                 "--category", "养老服务"], env={"CUNSYNC_PIN": pin})
    assert r.exit_code == 2 and "no person not-a-record-id" in r.output, r.output
    assert len(os.listdir("/proc/self/fd")) == fds
    assert tablet_pin(db, pin).exit_code == 0
    assert names(db, NEW_PIN) == ["张三"]


@pytest.mark.parametrize("set_up", ["init", "enrol"])
def test_a_set_up_answered_by_something_else_says_so_and_leaves_the_database_free(
        tmp_path: Path, set_up: str) -> None:
    "A wrong address whose server answers 200 with a web page (a router's login page, say)"
    from client.tablet import SyncFailed
    import httpx

    page = httpx.MockTransport(lambda request: httpx.Response(200, html="<html><body>请登录</body></html>"))
    path = tmp_path / "tablet.db"
    with httpx.Client(transport=page) as http, pytest.raises(SyncFailed) as err:
        if set_up == "init":
            Tablet.init(path, "http://192.168.1.1", "a-token", client=http, pin=PIN)
        else:
            Tablet.enrol(path, "http://192.168.1.1", "7KQ4M-2XD9P", client=http, pin=PIN)
    assert err.value.code == "bad_answer" and "address" in err.value.message
    tab = Tablet(path, pin=PIN)  # closed, lock and all: a PIN change finds no one else holding it
    try:
        assert not tab.enrolled
        tab.change_pin(NEW_PIN)
    finally:
        tab.close()
