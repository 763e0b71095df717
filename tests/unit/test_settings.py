"""Settings: read once from the environment; a bad value stops start-up naming the variable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from shared.settings import (
    DEFAULT_JOURNAL_DOMAINS,
    DEFAULT_SMART_HOSTS,
    LOCAL_ENV_FILE,
    QUEUE_SETTINGS,
    SETTINGS,
    STORAGE_SETTINGS,
    Settings,
    SettingsError,
    local_env_values,
    read_env_file,
    trust_local_env_ca,
)

ENV_NAMES = [spec.env for spec in SETTINGS]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment without any of the product's variables."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# --- defaults -------------------------------------------------------------------------------


def test_an_empty_environment_gives_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_the_defaults_are_those_of_the_vendor_procedure() -> None:
    settings = Settings.from_env({})
    assert settings.ea_connector_name == "Enterprise Audit送信コネクタ"
    assert settings.mg_connector_name == "MAILGATESΣ 送信コネクタ"
    assert settings.allowed_smart_hosts == {"mgf.cybermail.jp", "mgs.cybermail.jp", "mgp.cybermail.jp"}
    assert settings.allowed_journal_domains == {"cs-365.cybermail.jp", "cs-365-02.cybermail.jp"}
    assert settings.allowed_smart_hosts == DEFAULT_SMART_HOSTS
    assert settings.allowed_journal_domains == DEFAULT_JOURNAL_DOMAINS
    assert settings.activation_queue == "activation-notices"
    assert settings.activations_table == "activations"
    assert settings.events_table == "activationevents"
    assert settings.exo_admin_api_url == "https://outlook.office365.com"
    assert settings.entra_authority_host == "https://login.microsoftonline.com"
    assert settings.exo_auth_mode == "certificate"
    assert settings.spf_policy == "warn"
    assert settings.max_attempts == 8
    assert settings.dns_port == 53
    assert settings.exo_client_secret == ""


def test_the_defaults_pass_their_own_check() -> None:
    Settings().check()


def test_without_an_argument_the_process_environment_is_read(clean_env: pytest.MonkeyPatch) -> None:
    assert Settings.from_env() == Settings()
    clean_env.setenv("MAX_ATTEMPTS", "3")
    clean_env.setenv("ACTIVATION_QUEUE", "notices-test")
    settings = Settings.from_env()
    assert settings.max_attempts == 3
    assert settings.activation_queue == "notices-test"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_variable_means_the_default(blank: str) -> None:
    assert Settings.from_env({name: blank for name in ENV_NAMES}) == Settings()


def test_unrelated_variables_are_ignored() -> None:
    environ = {"PATH": "/usr/bin", "max_attempts": "0", "FUNCTIONS_WORKER_RUNTIME": "python"}
    assert Settings.from_env(environ) == Settings()


# --- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("mgf.cybermail.jp", {"mgf.cybermail.jp"}),
    ("mgf.cybermail.jp,mgs.cybermail.jp", {"mgf.cybermail.jp", "mgs.cybermail.jp"}),
    (" MGF.CyberMail.JP. , mgs.cybermail.jp ,, ", {"mgf.cybermail.jp", "mgs.cybermail.jp"}),
    ("relay.mailgates.example,relay.mailgates.example", {"relay.mailgates.example"}),
])
def test_smart_hosts_are_a_comma_separated_case_insensitive_list(raw: str, expected: set[str]) -> None:
    assert Settings.from_env({"ALLOWED_SMART_HOSTS": raw}).allowed_smart_hosts == expected


def test_journal_domains_are_a_comma_separated_case_insensitive_list() -> None:
    settings = Settings.from_env({"ALLOWED_JOURNAL_DOMAINS": "CS-365.cybermail.jp., journal.example.jp"})
    assert settings.allowed_journal_domains == {"cs-365.cybermail.jp", "journal.example.jp"}
    assert settings.allowed_smart_hosts == DEFAULT_SMART_HOSTS


@pytest.mark.parametrize(("env", "raw", "attr", "expected"), [
    ("MAX_ATTEMPTS", "3", "max_attempts", 3),
    ("MAX_ATTEMPTS", " 12 ", "max_attempts", 12),
    ("DNS_PORT", "5353", "dns_port", 5353),
    ("EXO_TIMEOUT_SECONDS", "12.5", "exo_timeout_seconds", 12.5),
    ("EXO_TIMEOUT_SECONDS", "10", "exo_timeout_seconds", 10.0),
    ("RETRY_BASE_SECONDS", "0.5", "retry_base_seconds", 0.5),
    ("RETRY_MAX_SECONDS", "7200", "retry_max_seconds", 7200.0),
    ("LEASE_SECONDS", "900", "lease_seconds", 900.0),
    ("REPLICATION_WAIT_SECONDS", "0", "replication_wait_seconds", 0.0),
])
def test_numbers_are_parsed(env: str, raw: str, attr: str, expected: float) -> None:
    value = getattr(Settings.from_env({env: raw}), attr)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("env", "attr", "raw", "expected"), [
    ("EXO_ADMIN_API_URL", "exo_admin_api_url", "https://127.0.0.1:8443/", "https://127.0.0.1:8443"),
    ("EXO_ADMIN_API_URL", "exo_admin_api_url", "https://outlook.office365.com", "https://outlook.office365.com"),
    ("ENTRA_AUTHORITY_HOST", "entra_authority_host", "https://login.microsoftonline.us//", "https://login.microsoftonline.us"),
])
def test_urls_lose_their_trailing_slash(env: str, attr: str, raw: str, expected: str) -> None:
    assert getattr(Settings.from_env({env: raw}), attr) == expected


@pytest.mark.parametrize(("env", "attr", "raw"), [
    ("ACTIVATION_QUEUE", "activation_queue", "notices-staging"),
    ("ACTIVATIONS_TABLE", "activations_table", "activationsStaging"),
    ("EVENTS_TABLE", "events_table", "eventsStaging"),
    ("EA_CONNECTOR_NAME", "ea_connector_name", "Enterprise Audit Outbound"),
    ("MG_CONNECTOR_NAME", "mg_connector_name", "MailGates Outbound"),
    ("EXO_AUTH_MODE", "exo_auth_mode", "secret"),
    ("EXO_AUTH_MODE", "exo_auth_mode", "federated"),
    ("EXO_CLIENT_ID", "exo_client_id", "00000000-0000-0000-0000-000000000001"),
    ("EXO_CERTIFICATE_PATH", "exo_certificate_path", "/secrets/app.pem"),
    ("KEY_VAULT_URL", "key_vault_url", "https://kv-example.vault.azure.net/"),
    ("EXO_CERTIFICATE_NAME", "exo_certificate_name", "exo-app"),
    ("MANAGED_IDENTITY_CLIENT_ID", "managed_identity_client_id", "00000000-0000-0000-0000-000000000002"),
    ("SPF_POLICY", "spf_policy", "block"),
    ("SPF_POLICY", "spf_policy", "off"),
    ("SPF_REQUIRED_INCLUDE", "spf_required_include", "spf.cybermail.jp"),
    ("DNS_NAMESERVER", "dns_nameserver", "127.0.0.1"),
])
def test_strings_are_read_as_given(env: str, attr: str, raw: str) -> None:
    assert getattr(Settings.from_env({env: f"  {raw}  "}), attr) == raw


def test_every_field_has_exactly_one_documented_variable() -> None:
    attrs = [spec.attr for spec in SETTINGS]
    assert sorted(attrs) == sorted(f.name for f in dataclasses.fields(Settings))
    assert len(set(ENV_NAMES)) == len(ENV_NAMES)
    # Storage follows the Functions host's own AzureWebJobsStorage* names; the rest are ours.
    for spec in SETTINGS:
        if spec.env.startswith("AzureWebJobsStorage"):
            assert spec.attr.startswith("storage_")
        else:
            assert spec.env == spec.attr.upper()
        assert spec.description.strip()


# --- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "raw"), [
    ("MAX_ATTEMPTS", "three"),
    ("MAX_ATTEMPTS", "2.5"),
    ("MAX_ATTEMPTS", "0"),
    ("MAX_ATTEMPTS", "-1"),
    ("DNS_PORT", "domain"),
    ("DNS_PORT", "53.0"),
    ("EXO_TIMEOUT_SECONDS", "soon"),
    ("EXO_TIMEOUT_SECONDS", "-1"),
    ("RETRY_BASE_SECONDS", "30s"),
    ("RETRY_BASE_SECONDS", "-0.5"),
    ("RETRY_MAX_SECONDS", "1h"),
    ("LEASE_SECONDS", "-600"),
    ("REPLICATION_WAIT_SECONDS", "a minute"),
    ("EXO_AUTH_MODE", "password"),
    ("EXO_AUTH_MODE", "Certificate"),
    ("SPF_POLICY", "strict"),
    ("ALLOWED_SMART_HOSTS", "*"),
    ("ALLOWED_SMART_HOSTS", "*.cybermail.jp"),
    ("ALLOWED_SMART_HOSTS", "mgf.cybermail.jp, *"),
    ("ALLOWED_SMART_HOSTS", "localhost"),
    ("ALLOWED_SMART_HOSTS", ","),
    ("ALLOWED_SMART_HOSTS", "mgf.cybermail.jp, mgs cybermail.jp"),
    ("ALLOWED_JOURNAL_DOMAINS", "*"),
    ("ALLOWED_JOURNAL_DOMAINS", "*.cybermail.jp"),
    ("ALLOWED_JOURNAL_DOMAINS", "cybermail"),
    ("ALLOWED_JOURNAL_DOMAINS", " , ,"),
    ("EA_CONNECTOR_NAME", "x" * 65),
    ("MG_CONNECTOR_NAME", "送" * 65),
    ("EXO_ADMIN_API_URL", "http://outlook.office365.com"),
    ("EXO_ADMIN_API_URL", "outlook.office365.com"),
    ("ENTRA_AUTHORITY_HOST", "http://login.microsoftonline.com"),
])
def test_a_bad_value_raises_settings_error_naming_the_variable(env: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({env: raw})
    assert env in str(info.value)


def test_connector_names_must_differ_ignoring_case() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"EA_CONNECTOR_NAME": "Outbound", "MG_CONNECTOR_NAME": "OUTBOUND"})
    assert "EA_CONNECTOR_NAME" in str(info.value)
    assert "MG_CONNECTOR_NAME" in str(info.value)


def test_a_connector_name_of_64_characters_is_accepted() -> None:
    assert Settings.from_env({"EA_CONNECTOR_NAME": "送" * 64}).ea_connector_name == "送" * 64


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_a_conversion_error_keeps_its_cause() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"MAX_ATTEMPTS": "many"})
    assert isinstance(info.value.__cause__, ValueError)
    assert "'many'" in str(info.value)


def test_check_rejects_a_hand_built_wildcard_allow_list() -> None:
    with pytest.raises(SettingsError, match="ALLOWED_SMART_HOSTS"):
        Settings(allowed_smart_hosts=frozenset({"*"})).check()




@pytest.mark.parametrize(("env", "raw"), [
    ("EXO_TIMEOUT_SECONDS", "nan"),
    ("RETRY_BASE_SECONDS", "NaN"),
    ("RETRY_MAX_SECONDS", "inf"),
    ("LEASE_SECONDS", "infinity"),
    ("REPLICATION_WAIT_SECONDS", "nan"),
    ("EXO_TIMEOUT_SECONDS", "0"),
    ("DNS_PORT", "0"),
    ("DNS_PORT", "-1"),
    ("DNS_PORT", "70000"),
    ("ACTIVATION_QUEUE", "Activation_Notices"),
    ("ACTIVATIONS_TABLE", "activation-rows"),
    ("EVENTS_TABLE", "ev"),
    ("ALLOWED_SMART_HOSTS", "mgf.cybermail.jp:25"),
    ("ALLOWED_SMART_HOSTS", "mgf..cybermail.jp"),
    ("ALLOWED_JOURNAL_DOMAINS", "adm@cybermail.jp"),
])
def test_a_value_the_product_cannot_run_with_raises_naming_the_variable(env: str, raw: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({env: raw})
    assert env in str(info.value)


# --- secrets --------------------------------------------------------------------------------


def test_public_dict_masks_the_client_secret() -> None:
    settings = Settings.from_env({"EXO_CLIENT_SECRET": "s3cr3t~value", "EXO_AUTH_MODE": "secret"})
    assert settings.exo_client_secret == "s3cr3t~value"

    public = settings.public_dict()
    assert public["exo_client_secret"] == "***"
    assert "s3cr3t~value" not in json.dumps(public)
    assert "s3cr3t~value" not in repr(settings)


def test_public_dict_shows_an_unset_secret_as_empty() -> None:
    assert Settings().public_dict()["exo_client_secret"] == ""


def test_public_dict_has_every_setting_and_is_json_ready() -> None:
    public = Settings().public_dict()
    assert set(public) == {f.name for f in dataclasses.fields(Settings)}
    assert public["allowed_smart_hosts"] == ["mgf.cybermail.jp", "mgp.cybermail.jp", "mgs.cybermail.jp"]
    assert public["allowed_journal_domains"] == ["cs-365-02.cybermail.jp", "cs-365.cybermail.jp"]
    assert public["ea_connector_name"] == "Enterprise Audit送信コネクタ"
    json.dumps(public)


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().max_attempts = 1  # type: ignore[misc]


# --- the local stack's env file (.run/local.env) ----------------------------------------------

LOCAL_STORAGE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
                 "QueueEndpoint=http://127.0.0.1:41001/devstoreaccount1;TableEndpoint=http://127.0.0.1:41002/devstoreaccount1;")


def _local_env(tmp_path: Path, **values: str) -> Path:
    from localrun.stack import write_local_env  # the writer `make run` uses, so both sides agree

    defaults = {"AzureWebJobsStorage": LOCAL_STORAGE, "EXO_ADMIN_API_URL": "https://127.0.0.1:41003",
                "ENTRA_AUTHORITY_HOST": "https://127.0.0.1:41003", "EXO_AUTH_MODE": "secret",
                "EXO_CLIENT_ID": "00000000-0000-0000-0000-0000000000a1", "EXO_CLIENT_SECRET": "throw-away",
                "DNS_NAMESERVER": "127.0.0.1", "DNS_PORT": "41004", "ACTIVATION_QUEUE": "activation-notices",
                "REQUESTS_CA_BUNDLE": str(tmp_path / "ca.pem")}
    path = tmp_path / ".run" / "local.env"
    write_local_env(path, {**defaults, **values})
    return path


def test_the_file_make_run_writes_is_read_back_as_written(tmp_path: Path) -> None:
    path = _local_env(tmp_path, EXO_CLIENT_SECRET="it's $HOME; `x` \"q\"")
    values = read_env_file(path)
    assert values["AzureWebJobsStorage"] == LOCAL_STORAGE
    assert values["EXO_CLIENT_SECRET"] == "it's $HOME; `x` \"q\""
    assert path.stat().st_mode & 0o777 == 0o600  # the client secret is a throw-away, still not world-readable


def test_with_nothing_configured_the_command_line_takes_the_local_stack(tmp_path: Path) -> None:
    settings = Settings.from_env({}, local_env=_local_env(tmp_path))
    assert settings.storage_connection_string == LOCAL_STORAGE
    assert (settings.exo_admin_api_url, settings.exo_auth_mode, settings.exo_client_secret) == (
        "https://127.0.0.1:41003", "secret", "throw-away")
    assert (settings.dns_nameserver, settings.dns_port) == ("127.0.0.1", 41004)


def test_a_variable_set_in_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    settings = Settings.from_env({"ACTIVATION_QUEUE": "other-queue", "DNS_PORT": "5353", "DNS_NAMESERVER": "::1"},
                                 local_env=_local_env(tmp_path))
    assert settings.activation_queue == "other-queue"
    assert (settings.dns_nameserver, settings.dns_port) == ("::1", 5353)
    # an empty variable counts as unset, as everywhere else in the settings
    assert Settings.from_env({"ACTIVATION_QUEUE": " "}, local_env=_local_env(tmp_path)).activation_queue == (
        "activation-notices")


@pytest.mark.parametrize("own", [
    {"AzureWebJobsStorage__accountName": "prodaccount"},
    {"AzureWebJobsStorage__tableServiceUri": "https://prodaccount.table.core.windows.net"},
])
def test_storage_of_ones_own_never_gets_the_files_connection_string(tmp_path: Path, own: dict[str, str]) -> None:
    # The connection string would win over the account name: the command would read Azurite.
    settings = Settings.from_env(own, local_env=_local_env(tmp_path))
    assert settings.storage_connection_string == ""
    assert settings.exo_admin_api_url == "https://127.0.0.1:41003"  # other groups still come from the file


def test_exchange_of_ones_own_never_gets_the_simulators_credentials(tmp_path: Path) -> None:
    settings = Settings.from_env({"EXO_ADMIN_API_URL": "https://outlook.office365.com"},
                                 local_env=_local_env(tmp_path))
    assert settings.exo_client_secret == "" and settings.exo_client_id == ""
    assert settings.entra_authority_host == "https://login.microsoftonline.com"
    assert settings.exo_auth_mode == "certificate"
    assert settings.storage_connection_string == LOCAL_STORAGE


def test_without_the_file_or_the_option_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({}, local_env=tmp_path / "absent.env") == Settings()
    # The Function App (and every test) reads no file, even with the stack's file right here.
    _local_env(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert LOCAL_ENV_FILE.exists()
    assert Settings.from_env({}) == Settings()


def test_names_that_are_not_settings_are_not_taken(tmp_path: Path) -> None:
    taken = local_env_values(_local_env(tmp_path), {})
    assert "REQUESTS_CA_BUNDLE" not in taken
    assert set(taken) <= {spec.env for spec in SETTINGS}


@pytest.mark.parametrize("line", ["AzureWebJobsStorage", "1BAD=x", "A=b c", "A='unclosed"])
def test_a_damaged_file_is_reported_with_its_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "local.env"
    path.write_text(f"# header\nexport ACTIVATION_QUEUE=q-one\n{line}\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"local\.env:3: not a NAME=value line"):
        Settings.from_env({}, local_env=path)


def test_comments_blank_lines_and_export_are_understood(tmp_path: Path) -> None:
    path = tmp_path / "local.env"
    path.write_text("\n# c\nexport ACTIVATION_QUEUE='q-one'  # trailing\nEVENTS_TABLE=\"evts\"\nSPF_POLICY=\n",
                    encoding="utf-8")
    assert read_env_file(path) == {"ACTIVATION_QUEUE": "q-one", "EVENTS_TABLE": "evts", "SPF_POLICY": ""}


def test_the_simulators_ca_is_trusted_only_with_the_files_exchange(tmp_path: Path) -> None:
    path = _local_env(tmp_path)
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    environ: dict[str, str] = {}
    assert trust_local_env_ca(path, environ) == str(tmp_path / "ca.pem")
    assert environ == {"REQUESTS_CA_BUNDLE": str(tmp_path / "ca.pem")}
    # not when the operator's own Exchange is configured, nor over a CA they chose
    for own in ({"EXO_ADMIN_API_URL": "https://outlook.office365.com"}, {"SSL_CERT_FILE": "/etc/ssl/mine.pem"}):
        assert trust_local_env_ca(path, dict(own)) is None
def test_validate_has_a_timeout_of_minutes_that_a_forty_second_validation_fits_in() -> None:
    settings = Settings.from_env({})
    assert settings.exo_validate_timeout_seconds == 240.0
    assert settings.exo_validate_timeout_seconds > 40 > settings.exo_timeout_seconds
    assert Settings.from_env({"EXO_VALIDATE_TIMEOUT_SECONDS": "90"}).exo_validate_timeout_seconds == 90.0


@pytest.mark.parametrize(("environ", "words"), [
    ({"EXO_VALIDATE_TIMEOUT_SECONDS": "0"}, "EXO_VALIDATE_TIMEOUT_SECONDS must be more than 0"),
    ({"EXO_VALIDATE_TIMEOUT_SECONDS": "300"}, "EXO_VALIDATE_TIMEOUT_SECONDS (300) must be less than 300"),
])
def test_a_validate_timeout_that_could_outlive_the_lease_is_refused(environ: dict[str, str], words: str) -> None:
    # a call may start with half the lease left (it is renewed below half); past the lease another
    # worker could take the activation over and send a second test message
    with pytest.raises(SettingsError) as info:
        Settings.from_env(environ)
    assert words in str(info.value)


def test_the_validate_bound_is_host_json_function_timeout() -> None:
    import json
    from pathlib import Path

    from shared.settings import FUNCTION_TIMEOUT_SECONDS
    hours, minutes, seconds = json.loads(Path("host.json").read_text())["functionTimeout"].split(":")
    assert int(hours) * 3600 + int(minutes) * 60 + float(seconds) == FUNCTION_TIMEOUT_SECONDS


def test_the_stacks_demo_pacing_and_spf_include_never_join_ones_own_services(tmp_path: Path) -> None:
    # make run writes its local pacing, queue/table names and the SPF include of its DNS server
    # too. With the operator's own Exchange and storage configured, none of them may count: a
    # 20 s replication wait would fail real tenants early, the include would be enforced on
    # customers who were never asked for it.
    stack = {"RETRY_BASE_SECONDS": "2", "RETRY_MAX_SECONDS": "30", "REPLICATION_WAIT_SECONDS": "20",
             "SPF_REQUIRED_INCLUDE": "spf.cybermail.jp", "ACTIVATION_QUEUE": "local-notices",
             "ACTIVATIONS_TABLE": "localactivations", "EVENTS_TABLE": "localevents"}
    path = _local_env(tmp_path, **stack)
    own = {"AzureWebJobsStorage__accountName": "prodaccount", "EXO_ADMIN_API_URL": "https://outlook.office365.com"}
    assert local_env_values(path, own) == {}
    assert Settings.from_env(own, local_env=path) == Settings.from_env(own)
    # each rides with the service it belongs to: the stack's storage brings its queue, tables and
    # back-off; the stack's Exchange brings its replication wait, DNS and SPF include
    with_storage = local_env_values(path, {"EXO_ADMIN_API_URL": "https://outlook.office365.com"})
    assert {"RETRY_BASE_SECONDS", "ACTIVATION_QUEUE", "EVENTS_TABLE", "AzureWebJobsStorage"} <= set(with_storage)
    assert not {"REPLICATION_WAIT_SECONDS", "SPF_REQUIRED_INCLUDE", "DNS_NAMESERVER"} & set(with_storage)
    with_exchange = local_env_values(path, {"AzureWebJobsStorage__accountName": "prodaccount"})
    assert {"REPLICATION_WAIT_SECONDS", "SPF_REQUIRED_INCLUDE", "DNS_NAMESERVER", "EXO_CLIENT_ID"} <= set(with_exchange)
    assert not {"RETRY_BASE_SECONDS", "ACTIVATION_QUEUE", "ACTIVATIONS_TABLE"} & set(with_exchange)
    # with nothing configured, the whole stack
    assert set(stack) <= set(local_env_values(path, {}))


def test_the_simulators_ca_is_not_made_the_only_trust_beside_ones_own_storage(tmp_path: Path) -> None:
    # REQUESTS_CA_BUNDLE replaces the system's trust for every HTTPS call of the process; the
    # file's CA holds only the simulator's throw-away root, so `list` against one's own storage
    # account (HTTPS, a public certificate) would fail its TLS handshake.
    path = _local_env(tmp_path)
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    for own in ({"AzureWebJobsStorage__accountName": "prodaccount"},
                {"AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=a2V5"}):
        environ = dict(own)
        assert trust_local_env_ca(path, environ) is None
        assert environ == own


@pytest.mark.parametrize(("env", "words"), [
    ({"LEASE_SECONDS": "abc"}, ("LEASE_SECONDS='abc'", "is not a number", "such as 60.0 (the default)")),
    ({"MAX_ATTEMPTS": "2.5"}, ("MAX_ATTEMPTS='2.5'", "is not a whole number", "such as 8 (the default)")),
    ({"DRIFT_REPAIR": "ture"}, ("DRIFT_REPAIR='ture'", "is not true or false", "default (false)")),
])
def test_a_value_of_the_wrong_kind_is_named_with_its_fix(env: dict[str, str], words: tuple[str, ...]) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("On", True), ("1", True), ("no", False), ("OFF", False)])
def test_a_flag_reads_the_usual_spellings(raw: str, value: bool) -> None:
    assert Settings.from_env({"DRIFT_REPAIR": raw}).drift_repair is value


def test_only_the_storage_settings_can_be_read_when_another_is_broken() -> None:
    env = {"LEASE_SECONDS": "abc", "ACTIVATION_QUEUE": "my-queue", "ACTIVATIONS_TABLE": "mine"}
    storage = Settings.from_env(env, only=STORAGE_SETTINGS)
    assert (storage.activation_queue, storage.activations_table, storage.lease_seconds) == ("my-queue", "mine", 60.0)
    with pytest.raises(SettingsError, match="ACTIVATIONS_TABLE='x'"):
        Settings.from_env({**env, "ACTIVATIONS_TABLE": "x"}, only=STORAGE_SETTINGS)
    assert Settings.from_env({**env, "ACTIVATIONS_TABLE": "x"}, only=QUEUE_SETTINGS).activations_table == "activations"
