"""hushwire-admin: manage users, the schema and TLS material of a relay's database.

`--db` takes a SQLite file or a postgresql:// URL; every command works on both.
Safe to run while the relay is up: both use the same SQLite db in WAL mode (or the same
PostgreSQL database), every
admin change is one short transaction (waiting up to a few seconds for the relay's
current commit), and account changes reach the running relay through the
`user_events` table, which it polls (see docs/operations.md). `restore` is the
exception: it refuses while a relay holds the db's lock (relay/dblock.py). `stats` and
`purge` ask a running relay over its control socket (relay/control.py): found beside a
SQLite db, named by `--control` for relays over PostgreSQL.

Exit status: 0 ok, 1 an operational error (unknown user, missing db, ...), 2 bad usage.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from hushwire.common.crypto.dh import to_pem
from hushwire.common.errors import HushwireError
from hushwire.common.names import is_valid_username
from hushwire.common.version import version
from hushwire.relay import backup, control, tls
from hushwire.relay import migrate as migrations
from hushwire.relay.dblock import DbLock
from hushwire.relay.errors import DbLocked, SchemaOutdated, TlsMaterialError, UnknownUser
from hushwire.relay.store import Store, UserRecord
from hushwire.relay.store.urls import is_postgres_url, postgres_module, redact
from hushwire.relay.tokens import hash_token, new_salt, new_token

PROG = "hushwire-admin"
DEFAULT_DB = "users.db"
MIN_DH_BITS = 2048
_BAR_WIDTH = 30


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (plus a pointer to --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _username(value: str) -> str:
    if not is_valid_username(value):
        raise argparse.ArgumentTypeError(
            f"invalid username {value!r}: 1-32 characters, a-z first, then a-z 0-9 _ . -"
        )
    return value


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {value!r}") from None
    if not days >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError("days must be 0 or more")
    return days


def _now() -> int:
    """The one place the CLI reads the clock; the store always gets time passed in."""
    return int(time.time())


def _print_json(obj: object) -> None:
    print(json.dumps(obj, sort_keys=True))


def _when(ts: int | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _db(value: str) -> Path | str:
    """--db: a postgresql:// URL as given, anything else a SQLite file path."""
    return value if is_postgres_url(value) else Path(value)


def _run(db: Path | str, fn: Callable[[Store], Any], *, create: bool = False) -> Any:
    """Open the db (building it first with `create` when missing), run `fn`, close.

    A PostgreSQL database is never migrated here: it exists before its first user (the
    server's operator creates it), so its schema is `migrate`'s job, or the relay's.
    """
    exists = not isinstance(db, Path) or db.exists()
    if not exists and not create:
        raise SchemaOutdated(f"no database at {db}; create it with `{PROG} --db {db} migrate`")
    # An existing db is never migrated implicitly: schema changes are `migrate`'s job.
    migrate = not exists

    async def go() -> Any:
        store = await Store.open(db, migrate=migrate)
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _issue_token(args: argparse.Namespace, *, created: bool) -> int:
    token = new_token()
    salt = new_salt()
    digest = hash_token(token, salt)
    if created:
        _run(args.db, lambda s: s.add_user(args.name, digest, salt, now=_now()), create=True)
    else:
        _run(args.db, lambda s: s.set_token(args.name, digest, salt, now=_now()))
    if args.json:
        _print_json({"user": args.name, "token": token})
        return 0
    what = "created user" if created else "new token for"
    print(f"{what} {args.name}")
    print(f"token: {token}")
    print(
        "This token will not be shown again: hand it to the user over a trusted channel."
        + ("" if created else " The old token no longer works; a live session is closed.")
    )
    return 0


def cmd_add_user(args: argparse.Namespace) -> int:
    return _issue_token(args, created=True)


def cmd_reset_token(args: argparse.Namespace) -> int:
    return _issue_token(args, created=False)


def _user_json(u: UserRecord) -> dict[str, object]:
    return {
        "user": u.name,
        "disabled": u.disabled,
        "created_at": u.created_at,
        "last_login_at": u.last_login_at,
    }


def cmd_list_users(args: argparse.Namespace) -> int:
    users: list[UserRecord] = _run(args.db, lambda s: s.list_users())
    if args.json:
        _print_json([_user_json(u) for u in users])
        return 0
    rows = [("NAME", "STATUS", "CREATED", "LAST LOGIN")] + [
        (
            u.name,
            "disabled" if u.disabled else "active",
            _when(u.created_at),
            _when(u.last_login_at),
        )
        for u in users
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(users)} user(s)")
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    _run(args.db, lambda s: s.set_disabled(args.name, disabled, now=_now()))
    if disabled:
        print(f"disabled {args.name}; a running relay closes their session within seconds")
    else:
        print(f"enabled {args.name}")
    return 0


def cmd_disable_user(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def cmd_enable_user(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def cmd_remove_user(args: argparse.Namespace) -> int:
    async def remove(store: Store) -> int:
        queued = await store.mailbox_count(args.name)
        await store.remove_user(args.name)
        return queued

    queued = _run(args.db, remove)
    print(f"removed {args.name} with their keys and {queued} queued envelope(s)")
    return 0


def cmd_list_devices(args: argparse.Namespace) -> int:
    devices: list[tuple[int, int, int | None]] = _run(args.db, lambda s: s.list_devices(args.name))
    if args.json:
        _print_json(
            [{"device": d, "linked_at": at, "last_login_at": seen} for d, at, seen in devices]
        )
        return 0
    rows = [("DEVICE", "LINKED", "LAST LOGIN")] + [
        (str(d), _when(at), _when(seen)) for d, at, seen in devices
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(devices)} device(s) of {args.name}")
    return 0


def cmd_remove_device(args: argparse.Namespace) -> int:
    _run(args.db, lambda s: s.remove_device(args.name, args.device))
    print(
        f"removed device {args.device} of {args.name} with its credential, keys and mailbox;"
        " a running relay closes its session within seconds. Its account's signed device"
        " list still names it until one of their devices runs `hushwire unlink"
        f" {args.device}`; until then the relay drops envelopes for it."
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    if isinstance(args.db, Path):
        start, end = migrations.migrate(args.db)
        where = str(args.db)
    else:
        start, end = asyncio.run(postgres_module().migrate_schema(args.db))
        where = redact(args.db)
    if start == end:
        print(f"{where} is up to date (schema v{end})")
    else:
        print(f"migrated {where}: schema v{start} -> v{end}")
        if start and isinstance(args.db, Path):
            print(f"backup of v{start}: {migrations.backup_path(args.db, start)}")
    return 0


def _sqlite_file(db: Path | str, command: str, instead: str) -> Path:
    """`db` for a command that only makes sense on a SQLite file; refuses a URL."""
    if isinstance(db, Path):
        return db
    raise HushwireError(f"{command} works on a SQLite file; with PostgreSQL {instead}")


def _relay_running(db: Path | str) -> bool:
    """Whether a relay holds the SQLite db's lock (relay/dblock.py). False for a URL:
    relays over PostgreSQL hold no local lock; reach one with --control."""
    if not isinstance(db, Path):
        return False
    try:
        DbLock(db).acquire(PROG).release()
    except DbLocked:
        return True
    return False


def _control_socket(args: argparse.Namespace) -> Path | None:
    """The control socket of the relay to ask: --control if given (it must answer), else
    the default one beside a SQLite db whose lock a relay holds, else None (no relay)."""
    if args.control is not None:
        return Path(args.control)
    if _relay_running(args.db):
        return control.control_path(args.db)
    return None


def cmd_stats(args: argparse.Namespace) -> int:
    async def read(store: Store) -> dict[str, Any]:
        return {**await store.stats(), "queued_by_user": await store.queued_by_user()}

    stats: dict[str, Any] = _run(args.db, read)
    # Only the running relay knows who is connected: it answers on its control socket.
    socket = _control_socket(args)
    live = control.ask(socket, {"op": "stats"}) if socket is not None else None
    if live is not None:
        stats["queued_by_user"] = live["queued_by_user"]
        stats["relay"] = {k: live[k] for k in ("online", "connections", "counters")}
    else:
        stats["relay"] = None
    if args.json:
        _print_json(stats)
        return 0
    print(f"users:    {stats['users']} ({stats['disabled']} disabled)")
    print(f"queued:   {stats['queued']} envelope(s)")
    print(
        f"payloads: {stats['payloads']} group payload(s), {stats['payload_bytes']:,} bytes"
        " (stored once per group send)"
    )
    print(f"db size:  {stats['db_bytes']:,} bytes")
    if live is None and isinstance(args.db, Path):
        print("relay:    not running")
    elif live is None:
        print("relay:    not asked (--control SOCKET reaches a running relay)")
    else:
        conns = live["connections"]
        print(
            f"relay:    running, {conns['authenticated']} logged-in connection(s), "
            f"{conns['handshaking']} connecting"
        )
        print(f"online:   {', '.join(live['online']) or '(nobody)'}")
    for name, n in stats["queued_by_user"].items():
        print(f"  {name:<32} {n} queued")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    db = _sqlite_file(args.db, "backup", "use pg_dump")
    info = backup.backup(db, args.file)
    print(
        f"backed up {args.db} to {args.file}: schema v{info.version}, {info.users} user(s), "
        f"{info.queued} queued envelope(s)"
    )
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    db = _sqlite_file(args.db, "restore", "use pg_restore with the relays stopped")
    info, saved = backup.restore(args.file, db, now=dt.datetime.fromtimestamp(_now(), dt.UTC))
    print(
        f"restored {args.db} from {args.file}: schema v{info.version}, {info.users} user(s), "
        f"{info.queued} queued envelope(s)"
    )
    if saved is not None:
        print(f"the db it replaced was saved as {saved}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    cutoff = int(_now() - args.older_than * 86400)
    socket = _control_socket(args)
    if socket is not None:
        # Through the relay: it keeps per-user mailbox counts that must see the purge.
        purged = int(control.ask(socket, {"op": "purge", "older_than": cutoff})["purged"])
        where = "by the running relay"
    elif isinstance(args.db, Path):
        purged = _run(args.db, lambda s: s.purge(older_than=cutoff))
        where = "in the db (no relay running)"
    else:
        # Relays over PostgreSQL cannot be seen from here, and each keeps mailbox counts
        # a purge behind its back would leave wrong.
        raise HushwireError(
            "purge on PostgreSQL goes through a running relay: give --control SOCKET (its "
            "control_socket); otherwise the relays purge by themselves (retention_days)"
        )
    print(f"purged {purged} envelope(s) older than {args.older_than:g} day(s) {where}")
    return 0


def cmd_copy_store(args: argparse.Namespace) -> int:
    source = _sqlite_file(args.source, "copy-store --from", "there is nothing to copy from")
    if isinstance(args.to, Path):
        raise HushwireError("copy-store --to must be a postgresql:// URL")
    postgres_module()  # a clear error if asyncpg is missing
    from hushwire.relay.store import copy

    # No relay may write the file while it is copied: take the lock a relay holds.
    lock = DbLock(source).acquire(f"{PROG} copy-store")
    try:
        counts = asyncio.run(copy.copy_from_sqlite(source, args.to))
    finally:
        lock.release()
    print(
        f"copied {source} to {redact(args.to)}: {counts['users']} user(s), "
        f"{counts['mailbox']} queued envelope(s) with {counts['payloads']} group payload(s), "
        f"{counts['one_time_prekeys']} one-time "
        "prekey(s); start the relay with --store and that URL"
    )
    return 0


def cmd_issue_client_cert(args: argparse.Namespace) -> int:
    async def exists(store: Store) -> bool:
        return await store.user_exists(args.name)

    if args.ca_dir is None and not isinstance(args.db, Path):
        raise HushwireError(
            "with a postgresql:// --db, say where the relays' client CA lives: --ca-dir DIR"
        )
    if not _run(args.db, exists):
        raise UnknownUser(f"no user named {args.name!r}")
    ca_dir = args.ca_dir or args.db.resolve().parent
    cert, key = tls.issue_client_cert(ca_dir, args.name, args.out)
    print(f"client certificate for {args.name}: {cert}")
    print(f"private key (mode 0600): {key}")
    print(f"signed by {Path(ca_dir) / tls.CA_CERT}; start the relay with it as client CA")
    return 0


def _progress_bar(stream: IO[str]) -> Callable[[int, float], None]:
    """Draw `[####......] n candidates (~m expected)` in place on `stream`."""

    def draw(attempts: int, expected: float) -> None:
        frac = min(attempts / expected, 1.0) if expected > 0 else 0.0
        filled = int(frac * _BAR_WIDTH)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        stream.write(f"\r[{bar}] {attempts:,} candidates (~{expected:,.0f} expected)")
        stream.flush()

    return draw


def cmd_dhparams(args: argparse.Namespace) -> int:
    if args.bits < MIN_DH_BITS and not args.insecure_test_bits:
        print(f"{PROG}: error: --bits must be at least {MIN_DH_BITS}", file=sys.stderr)
        return 2
    if args.out.exists():
        raise TlsMaterialError(f"{args.out} already exists; choose another --out or remove it")
    try:
        # Imported here: it pulls in sympy and multiprocessing, which no other command needs.
        from hushwire.common.crypto import dhparams
    except ImportError as exc:
        raise HushwireError(f"dhparams support is not available: {exc}") from exc
    progress = _progress_bar(sys.stderr)
    if args.bits < MIN_DH_BITS:
        # Test-only (hidden flag): the public generator enforces the 2048-bit floor.
        group = dhparams._generate_group(
            args.bits, workers=args.workers, progress=progress, min_bits=args.bits
        )
    else:
        group = dhparams.generate_safe_prime_group(
            args.bits, workers=args.workers, progress=progress
        )
    sys.stderr.write("\n")
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(to_pem(group))
    tmp.replace(args.out)
    print(f"wrote a {args.bits}-bit safe-prime group to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Manage the users and database of a hushwire relay.")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    p.add_argument(
        "--db",
        type=_db,
        default=Path(DEFAULT_DB),
        metavar="PATH|URL",
        help="SQLite database file (default ./users.db) or a postgresql:// URL",
    )
    p.add_argument(
        "--control",
        type=Path,
        default=None,
        metavar="SOCKET",
        help="the running relay's control socket for stats and purge (default: DB.control "
        "beside a SQLite db; with a postgresql:// URL, the control_socket of one of its relays)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    def command(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> Any:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        return sp

    def with_name(sp: Any) -> Any:
        sp.add_argument("name", type=_username, metavar="NAME")
        return sp

    def with_json(sp: Any) -> Any:
        sp.add_argument("--json", action="store_true", help="print JSON for scripts")
        return sp

    with_json(
        with_name(command("add-user", cmd_add_user, "create a user and print its token once"))
    )
    with_json(command("list-users", cmd_list_users, "list users and their status"))
    with_name(command("disable-user", cmd_disable_user, "block logins and end the live session"))
    with_name(command("enable-user", cmd_enable_user, "allow a disabled user to log in again"))
    with_json(with_name(command("reset-token", cmd_reset_token, "replace a user's token")))
    with_name(command("remove-user", cmd_remove_user, "delete a user, keys and mailbox"))
    with_json(with_name(command("list-devices", cmd_list_devices, "list a user's devices")))
    removal = with_name(
        command(
            "remove-device", cmd_remove_device, "remove one device of a user (credential, mailbox)"
        )
    )
    removal.add_argument("device", type=int, metavar="ID", help="the device id (list-devices)")
    command("migrate", cmd_migrate, "create the db or bring its schema up to date")
    with_json(
        command(
            "stats",
            cmd_stats,
            "users, queued envelopes (per user), db size; who is online if a relay runs",
        )
    )
    bak = command("backup", cmd_backup, "copy the db to FILE, safe while the relay runs")
    bak.add_argument("file", type=Path, metavar="FILE", help="new file to write")
    res = command("restore", cmd_restore, "replace the db with backup FILE (relay stopped)")
    res.add_argument("file", type=Path, metavar="FILE", help="a file written by `backup`")
    purge = command("purge", cmd_purge, "delete undelivered envelopes older than DAYS now")
    purge.add_argument(
        "--older-than", type=_days, required=True, metavar="DAYS", help="age in days (e.g. 30)"
    )
    cp = command("copy-store", cmd_copy_store, "copy a SQLite store into an empty PostgreSQL one")
    cp.add_argument("--from", dest="source", type=_db, required=True, metavar="PATH")
    cp.add_argument("--to", type=_db, required=True, metavar="URL")
    cert = with_name(
        command("issue-client-cert", cmd_issue_client_cert, "issue a TLS client certificate")
    )
    cert.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    cert.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the relay's client CA lives (default: next to the db file; required "
        "with a postgresql:// URL)",
    )
    dh = command("dhparams", cmd_dhparams, "generate a safe-prime DH group (takes minutes)")
    dh.add_argument("--bits", type=int, default=3072, help="size of p (>= 2048, default 3072)")
    dh.add_argument("--out", type=Path, required=True, metavar="FILE", help="PEM file to write")
    dh.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    dh.add_argument("--insecure-test-bits", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `hushwire-admin`; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args))
    except HushwireError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
    except (OSError, sqlite3.Error, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
