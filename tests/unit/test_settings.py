"""Settings checked at start: list syntax, URLs, durations, typos, one-line CLI errors."""

from __future__ import annotations

import logging

import pytest

from orchestrator.errors import SettingsInvalid
from orchestrator.settings import Settings, load, unknown_variables
from tests.unit.test_cli import run


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORCH_WORKFLOW_PACKAGES", "ORCH_REDIS_URL", "ORCH_VISIBILITY_TIMEOUT_S",
                 "ORCH_API_TOKENS", "ORCH_LEASE_S", "ORCH_LOG_FORMAT", "ORCH_BROKER_URL",
                 "ORCH_BROKER_SENTINEL_MASTER", "ORCH_REDIS_SENTINEL_MASTER"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("text", "packages"), [
    ("mypkg", ("mypkg",)),
    ("a,b", ("a", "b")),
    (" a , b ,", ("a", "b")),
    ('["a", "b"]', ("a", "b")),
    (' ["a"] ', ("a",)),
])
def test_list_settings_take_commas_or_json(monkeypatch: pytest.MonkeyPatch, text: str,
                                           packages: tuple[str, ...]) -> None:
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", text)
    assert load().workflow_packages == packages
    assert Settings(workflow_packages=["x", "y"]).workflow_packages == ("x", "y")


def test_a_broken_json_list_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_WORKFLOW_PACKAGES", '["a", ')
    with pytest.raises(SettingsInvalid) as info:
        load()
    text = str(info.value)
    assert "ORCH_WORKFLOW_PACKAGES" in text and "a,b" in text and "\n" not in text


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@db.example:6380/2",
                                 "unix:///run/redis.sock", "redis://localhost"])
def test_good_redis_urls(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ORCH_REDIS_URL", url)
    assert load().redis_url == url


@pytest.mark.parametrize(("url", "words"), [
    ("http://:secret@127.0.0.1:6379/0", "scheme 'http'"),
    ("127.0.0.1:6379", "no scheme"),
    ("localhost", "no scheme"),
    ("redis://:secret@/0", "names no host"),
    ("redis://127.0.0.1:99999/0", "bad port"),
    ("unix://", "socket path"),
])
def test_bad_redis_urls_name_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                      url: str, words: str) -> None:
    monkeypatch.setenv("ORCH_REDIS_URL", url)
    with pytest.raises(SettingsInvalid) as info:
        load()
    text = str(info.value)
    assert text.startswith("invalid setting: ORCH_REDIS_URL: ")
    assert words in text
    assert "secret" not in text  # the password is masked
    assert "\n" not in text


def test_the_broker_is_the_stores_redis_unless_another_is_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.runtime import broker
    from orchestrator.runtime.celeryconf import client_app

    store = "redis://127.0.0.1:6379/0"
    for same in ("", store, f" {store} "):
        s = Settings(redis_url=store, broker_url=same)
        assert not s.broker_apart and s.broker_target == s.redis_target
        app = client_app(s)
        assert app.conf.broker_url == store and broker.captures(app)
    monkeypatch.setenv("ORCH_BROKER_URL", "redis://:pw@10.0.0.2:6380/1")
    s = load()
    assert s.broker_apart and s.broker_target.url == "redis://:pw@10.0.0.2:6380/1"
    app = client_app(s)
    # the queues on the broker's Redis; Celery's results and chord counters with the store
    assert app.conf.broker_url == "redis://:pw@10.0.0.2:6380/1"
    assert app.conf.result_backend.endswith("+" + store)
    # the store's scripts cannot send onto another server: publishes are Celery's own
    assert not broker.captures(app)


@pytest.mark.parametrize(("url", "words"), [
    ("http://:secret@127.0.0.1:6379/0", "scheme 'http'"),
    ("redis://:secret@/0", "names no host"),
    ("sentinel://:secret@s1:26379/0", "ORCH_BROKER_SENTINEL_MASTER"),
])
def test_a_bad_broker_url_names_the_variable_and_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                         url: str, words: str) -> None:
    monkeypatch.setenv("ORCH_BROKER_URL", url)
    with pytest.raises(SettingsInvalid) as info:
        load()
    text = str(info.value)
    assert "ORCH_BROKER_URL" in text and words in text
    assert "secret" not in text and "\n" not in text


def test_a_sentinel_broker_takes_its_own_group_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_BROKER_URL", "sentinel://s1:26379/0")
    monkeypatch.setenv("ORCH_BROKER_SENTINEL_MASTER", "queues")
    target = load().broker_target
    assert target.sentinel_master == "queues"
    # the same Sentinels, another group: another Redis
    monkeypatch.setenv("ORCH_REDIS_URL", "sentinel://s1:26379/0")
    monkeypatch.setenv("ORCH_REDIS_SENTINEL_MASTER", "runs")
    s = load()
    assert s.broker_apart and s.broker_target.sentinel_master == "queues"
    monkeypatch.setenv("ORCH_BROKER_SENTINEL_MASTER", "runs")
    assert not load().broker_apart


@pytest.mark.parametrize(("name", "value"), [
    ("ORCH_VISIBILITY_TIMEOUT_S", "0"), ("ORCH_VISIBILITY_TIMEOUT_S", "-5"),
    ("ORCH_LEASE_S", "0.5"), ("ORCH_REDIS_TIMEOUT_S", "0"), ("ORCH_RUN_RETENTION_S", "0"),
    ("ORCH_CLAIM_GRACE_S", "-1"), ("ORCH_CALLBACK_TIMEOUT_S", "0"),
])
def test_durations_must_be_positive(monkeypatch: pytest.MonkeyPatch, name: str,
                                    value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsInvalid, match=name):
        load()


def test_unknown_variables_are_warned_with_the_closest_name(
        caplog: pytest.LogCaptureFixture) -> None:
    env = {"ORCH_REDIS_UR": "redis://x/0", "ORCH_WORKFLOW_PACKAGE": "a",
           "ORCH_REDIS_URL": "redis://x/0", "ORCH_VENV": ".venv", "ORCH_ZZZZZZZZZZZZ": "1",
           "PATH": "/bin"}
    warnings = unknown_variables(env)
    assert warnings == [
        "ORCH_REDIS_UR is not a setting and is ignored; did you mean ORCH_REDIS_URL?",
        "ORCH_WORKFLOW_PACKAGE is not a setting and is ignored; did you mean "
        "ORCH_WORKFLOW_PACKAGES?",
        "ORCH_ZZZZZZZZZZZZ is not a setting and is ignored; see orchestrator/settings.py",
    ]
    with caplog.at_level(logging.WARNING, logger="orchestrator.settings"):
        load(environ=env)
    assert [r.getMessage() for r in caplog.records] == warnings


def test_the_log_format_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LOG_FORMAT", "json")
    assert load().log_format == "json"
    monkeypatch.setenv("ORCH_LOG_FORMAT", "xml")
    with pytest.raises(SettingsInvalid, match="ORCH_LOG_FORMAT"):
        load()


def test_a_bad_setting_is_one_line_and_exit_2_in_the_cli(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORCH_REDIS_URL", "http://:secret@db:6379/0")
    code, out, err = run(["list"], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("error: invalid setting: ORCH_REDIS_URL: ")
    assert "Traceback" not in err and "secret" not in err and "pydantic" not in err


def test_unparsable_json_setting_is_one_line_in_the_cli(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORCH_API_TOKENS", "[{")
    code, _, err = run(["list"], capsys)
    assert code == 2
    assert err.strip() == ("error: invalid setting: ORCH_API_TOKENS cannot be parsed: it "
                           "must be JSON (see README, Settings)")


def test_a_typo_is_warned_about_by_the_cli(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ORCH_REDIS_UR", "redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="orchestrator.settings"):
        code, _, _ = run(["list"], capsys)
    assert code == 0
    assert "ORCH_REDIS_UR is not a setting and is ignored; did you mean ORCH_REDIS_URL?" in [
        r.getMessage() for r in caplog.records]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    code, out, _ = run(["--version"], capsys)
    assert code == 0
    assert out == f"orchestrator {version('celery-orchestrator')}\n"


@pytest.mark.parametrize("secret", ["whsec_!!!", "whsec_#", "whsec_a"])
def test_a_callback_secret_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                    secret: str) -> None:
    """Found by the fuzzer: such a secret decoded to no key (or none at all), and every
    callback's signing raised; a receiver's ``verify`` raised instead of answering False."""
    from orchestrator.callbacks.signing import verify

    monkeypatch.setenv("ORCH_CALLBACK_SECRET", secret)
    with pytest.raises(SettingsInvalid, match="ORCH_CALLBACK_SECRET") as info:
        load()
    assert secret not in str(info.value)  # a secret is never echoed
    assert verify(b"{}", {"webhook-id": "m", "webhook-timestamp": "1",
                          "webhook-signature": "v1,x"}, secret) is False
    monkeypatch.setenv("ORCH_CALLBACK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert load().callback_secret.get_secret_value().startswith("whsec_")
