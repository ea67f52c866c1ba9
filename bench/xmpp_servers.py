"""Prosody 0.12 and ejabberd 23.01 (Debian packages) configured for a fair side-by-side.

Both get: direct TLS c2s on 127.0.0.1 with the relay's P-256 certificate (TLS 1.3),
users u0..u{n-1} registered beforehand with SCRAM-SHA-1 credentials (one password and
salt for all, so the generator derives the salted password once), roster, stream
management (XEP-0198) and offline storage, nothing else; no rate or size limits that
the bench would hit, as the bench lifts hushwire's own. Each start begins from a fresh
copy of the user template (Prosody's Lua heap grows ~3 KB per login and keeps it).
The exact configs are printed in docs/performance.md.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.scram import stored_keys
from bench.servers import Server, ensure_package, free_port, user_name
from bench.xmpp import PASSWORD

HOST = "localhost"
PROSODY_SALT = b"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
PROSODY_ITERATIONS = 10000  # Prosody 0.12's default_iteration_count
EJABBERD_EBIN = Path("/usr/lib/x86_64-linux-gnu/ejabberd-23.01-1/ebin")
TEMPLATE_TIMEOUT = 300.0


def _fresh_copy(template: Path, live: Path) -> None:
    shutil.rmtree(live, ignore_errors=True)
    shutil.copytree(template, live)


# --- Prosody -----------------------------------------------------------------------------


def prosody_template(workdir: Path, nusers: int) -> Path:
    """Account files in Prosody's `internal_hashed` format, written directly (fast)."""
    template = workdir / "prosody-template"
    accounts = template / HOST / "accounts"
    accounts.mkdir(parents=True, exist_ok=True)
    stored, server = stored_keys(PASSWORD, PROSODY_SALT, PROSODY_ITERATIONS)
    record = (
        "return {\n"
        f'\t["iteration_count"] = {PROSODY_ITERATIONS};\n'
        f'\t["salt"] = "{PROSODY_SALT.decode()}";\n'
        f'\t["server_key"] = "{server.hex()}";\n'
        f'\t["stored_key"] = "{stored.hex()}";\n'
        "};\n"
    )
    for i in range(nusers):
        (accounts / f"{user_name(i)}.dat").write_text(record)
    return template


def prosody(workdir: Path, core: int, template: Path, *, generational: bool) -> Server:
    binary = ensure_package("/usr/bin/prosody", ("prosody", "lua-event"))
    name = "prosody-gen" if generational else "prosody"
    port = free_port()
    data = workdir / f"{name}-data"
    conf = workdir / f"{name}.cfg.lua"
    gc = 'gc = { mode = "generational" }\n' if generational else ""
    conf.write_text(
        # as root: the bench runs as root; Prosody would otherwise switch to its own user
        "run_as_root = true\n"
        "daemonize = false\n"
        f'pidfile = "{workdir / name}.pid"\n'
        f'data_path = "{data}"\n'
        f'log = {{ {{ levels = {{ min = "error" }}, to = "file", '
        f'filename = "{workdir / name}.err" }} }}\n'
        'network_backend = "epoll"\n'
        # TCP_NODELAY, as asyncio sets it and mosquitto is configured to
        "network_settings = { nagle = false }\n"
        f"{gc}"
        'interfaces = { "127.0.0.1" }\n'
        "c2s_ports = { }\n"
        f"c2s_direct_tls_ports = {{ {port} }}\n"
        "s2s_ports = { }\n"
        "http_ports = { }\n"
        "https_ports = { }\n"
        'modules_enabled = { "roster", "saslauth", "tls", "smacks", "offline" }\n'
        'authentication = "internal_hashed"\n'
        'storage = "internal"\n'
        "c2s_require_encryption = true\n"
        f'ssl = {{ certificate = "{workdir / "relay-cert.pem"}", '
        f'key = "{workdir / "relay-key.pem"}", protocol = "tlsv1_3" }}\n'
        f'VirtualHost "{HOST}"\n'
    )
    return Server(
        name,
        [binary, "--config", str(conf), "-F"],
        workdir / f"{name}.log",
        core,
        port=port,
        prepare=lambda: _fresh_copy(template, data),
    )


# --- ejabberd ----------------------------------------------------------------------------


def _ejabberd_conf(workdir: Path, port: int) -> Path:
    conf = workdir / "ejabberd.yml"
    conf.write_text(
        f"hosts: [{HOST}]\n"
        "loglevel: warning\n"
        "log_rotate_count: 0\n"
        f"certfiles: ['{workdir / 'relay-cert.pem'}', '{workdir / 'relay-key.pem'}']\n"
        "default_db: mnesia\n"
        "auth_method: [mnesia]\n"
        "auth_password_format: scram\n"
        "auth_scram_hash: sha\n"
        "listen:\n"
        f"  - port: {port}\n"
        "    ip: '127.0.0.1'\n"
        "    module: ejabberd_c2s\n"
        "    tls: true\n"  # direct TLS
        "    backlog: 1024\n"  # at the default 5, logins failed with 60 s TLS timeouts
        "    shaper: none\n"
        "    protocol_options: [no_sslv3, no_tlsv1, no_tlsv1_1, no_tlsv1_2]\n"
        "shaper_rules:\n"
        "  max_user_offline_messages: infinity\n"
        "  max_user_sessions: infinity\n"
        "modules:\n"
        "  mod_roster: {}\n"
        "  mod_stream_mgmt: {}\n"
        "  mod_offline:\n"
        "    access_max_user_messages: max_user_offline_messages\n"
    )
    return conf


def _erl(workdir: Path, spool: Path, conf: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    # As Debian's ejabberdctl starts it (+K true +P 250000), without a distributed node
    # name (nothing needs ejabberdctl); +S 1:1 as a single core gets; TCP_NODELAY on
    # accepted sockets (inherited from the listener), as asyncio sets it.
    argv = [
        "erl",
        "-noinput",
        "-noshell",
        "+K",
        "true",
        "+P",
        "250000",
        "+S",
        "1:1",
        "-kernel",
        "inet_default_listen_options",
        "[{nodelay,true}]",
        "-pa",
        str(EJABBERD_EBIN),
        "-mnesia",
        "dir",
        f'"{spool}"',
        "-s",
        "ejabberd",
        *extra,
    ]
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(workdir),
        "EJABBERD_CONFIG_PATH": str(conf),
        "EJABBERD_LOG_PATH": str(workdir / "ejabberd-erl.log"),
    }
    return argv, env


def ejabberd_template(workdir: Path, nusers: int) -> Path:
    """A mnesia spool with the users: u0 registered through ejabberd_auth (SCRAM-SHA-1,
    4096 iterations), the rest as copies of its record (same password and salt)."""
    ensure_package("/usr/sbin/ejabberdctl", ("ejabberd",))
    template = workdir / "ejabberd-template"
    conf = _ejabberd_conf(workdir, free_port())
    register = (
        f'H = <<"{HOST}">>, '
        f'ok = ejabberd_auth:try_register(<<"u0">>, H, <<"{PASSWORD.decode()}">>), '
        '[R] = mnesia:dirty_read(passwd, {<<"u0">>, H}), '
        "lists:foreach(fun(I) -> "
        'U = list_to_binary("u" ++ integer_to_list(I)), '
        "ok = mnesia:dirty_write(setelement(2, R, {U, H})) end, "
        f"lists:seq(1, {nusers - 1})), "
        'io:format("registered~n"), init:stop().'
    )
    argv, env = _erl(workdir, template, conf, "-eval", register)
    out = subprocess.run(
        argv, env=env, capture_output=True, timeout=TEMPLATE_TIMEOUT, check=False, text=True
    )
    if "registered" not in out.stdout:
        raise RuntimeError(f"ejabberd user template failed:\n{out.stdout}\n{out.stderr}")
    return template


def ejabberd(workdir: Path, core: int, template: Path) -> Server:
    port = free_port()
    spool = workdir / "ejabberd-spool"
    argv, env = _erl(workdir, spool, _ejabberd_conf(workdir, port))
    return Server(
        "ejabberd",
        argv,
        workdir / "ejabberd.log",
        core,
        port=port,
        prepare=lambda: _fresh_copy(template, spool),
        env=env,
    )
