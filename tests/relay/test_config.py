from pathlib import Path

import pytest

from hushwire.relay.config import ConfigError, RelayConfig, build_parser, from_args


def test_defaults():
    cfg = from_args([])
    assert cfg == RelayConfig()
    assert cfg.db == Path("users.db") and cfg.port == 7443 and cfg.host == "127.0.0.1"
    assert cfg.cert_path == Path("relay-cert.pem")


def test_toml_then_flags_win(tmp_path):
    conf = tmp_path / "relay.toml"
    conf.write_text('[relay]\nport = 9000\nhost = "::1"\ndb = "data/relay.db"\nsend_rate = 5\n')
    cfg = from_args(["--config", str(conf), "--port", "9100"])
    assert cfg.port == 9100  # the flag wins
    assert cfg.host == "::1"
    assert cfg.db == tmp_path / "data" / "relay.db"  # relative to the file
    assert cfg.send_rate == 5.0
    assert cfg.cert_path == tmp_path / "data" / "relay-cert.pem"


def test_top_level_keys_work_too(tmp_path):
    conf = tmp_path / "relay.toml"
    conf.write_text("max_mailbox = 7\n")
    assert from_args(["--config", str(conf)]).max_mailbox == 7


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("prot = 1\n", "unknown setting(s) prot"),
        ('port = "x"\n', "port: expected int"),
        ("port = true\n", "port: expected int"),
        ("port = 70000\n", "port must be between"),
        ("max_frame = 10\n", "max_frame must be at least"),
        ("idle_timeout = 0\n", "idle_timeout must be positive"),
        ('synchronous = "OFF"\n', "synchronous must be NORMAL or FULL"),
        ("port = = 1\n", "relay.toml"),
    ],
)
def test_bad_config_gives_clear_errors(tmp_path, text, fragment):
    conf = tmp_path / "relay.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError) as exc:
        from_args(["--config", str(conf)])
    assert fragment in exc.value.message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        from_args(["--config", str(tmp_path / "nope.toml")])


def test_bad_flag_value():
    with pytest.raises(ConfigError, match="port"):
        from_args(["--port", "eighty"])


def test_help_documents_every_setting_and_the_file():
    text = build_parser().format_help()
    for name in RelayConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text
        assert f"  {name} " in text  # the TOML key, in the settings list
    assert "--config" in text and "flags win" in text


def test_store_is_a_postgresql_url_from_flag_or_file(tmp_path):
    assert RelayConfig().store_target == Path("users.db")  # SQLite unless told otherwise
    url = "postgresql://relay@db.internal/hushwire"
    assert from_args(["--store", url]).store_target == url
    cfg = tmp_path / "relay.toml"
    cfg.write_text(f'store = "{url}"\ndb = "state/users.db"\n')
    config = from_args(["--config", str(cfg)])
    assert config.store_target == url
    assert config.cert_path == tmp_path / "state" / "relay-cert.pem"  # TLS files by the db
    for bad in ("users.db", "sqlite:///users.db", "mysql://db/hushwire"):
        with pytest.raises(ConfigError, match="postgresql://"):
            from_args(["--store", bad])


def test_control_socket_from_flag_or_file_relative_to_the_file(tmp_path):
    assert from_args(["--db", "/srv/r/users.db"]).control_path == Path("/srv/r/users.db.control")
    cfg = tmp_path / "relay.toml"
    cfg.write_text('control_socket = "run/relay-a.control"\n')
    assert from_args(["--config", str(cfg)]).control_path == tmp_path / "run/relay-a.control"
    flag = from_args(["--config", str(cfg), "--control-socket", "/run/b.control"])
    assert flag.control_path == Path("/run/b.control")


def test_a_bus_needs_a_postgresql_store(tmp_path):
    conf = tmp_path / "relay.toml"
    conf.write_text('store = "postgresql://hw@db/hw"\nbus = "redis://127.0.0.1:6379/0"\n')
    cfg = from_args(["--config", str(conf)])
    assert cfg.bus == "redis://127.0.0.1:6379/0" and cfg.store == "postgresql://hw@db/hw"
    with pytest.raises(ConfigError, match="bus needs a PostgreSQL store"):
        from_args(["--bus", "redis://127.0.0.1:6379/0"])
    with pytest.raises(ConfigError, match="bus must be a redis://"):
        from_args(["--store", "postgresql://hw@db/hw", "--bus", "http://x"])
