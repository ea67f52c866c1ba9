"""`Store`'s accounts-with-devices part: what the device handlers and the admin CLI call,
and the in-memory state it keeps: which accounts have several devices (so a one-body
`send` is refused without a query), and each account's devices as last read (so a
`send_devices`, what every client sends, is checked without a query). `Store` builds on
it; the SQL is the backend's (sqlite_devices.py). A device is a principal with its own
mailbox: removing one drops its name from the mailbox's id cache.

The devices cache is exact for changes made through this store (every one ends in
`_note`) and follows the admin CLI's through the user-events poll (`_forget`), like the
mailbox's id cache. A read that raced a change is not cached (`_lists_epoch`). A store
several relays share (`shared`: PostgreSQL with the bus) keeps no such cache: another
relay's change would not reach it, so every `send_devices` reads the lists there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hushwire.common.keys import IdentityPublic, SignedDeviceList
from hushwire.relay.devices import AccountDevices, principal, split_principal
from hushwire.relay.store.mailbox import Mailbox
from hushwire.relay.store.records import UserRecord


class DeviceStore(Mailbox):
    """Devices and their lists (see the module docstring)."""

    _multi: set[str]  # accounts with more than one device, loaded at open
    _lists: dict[str, AccountDevices]  # account -> its devices, as last read
    _lists_epoch: int  # bumped by every change: a read that spans one is not cached

    async def _load_multi(self) -> None:
        self._multi = await self._backend.multi_device_accounts()

    def single_device(self, accounts: Sequence[str]) -> bool:
        """True if none of `accounts` has more than one device (a one-body send is whole)."""
        multi = self._multi
        return not multi or not any(a in multi for a in accounts)

    def cached_devices(self, accounts: Iterable[str]) -> dict[str, AccountDevices] | None:
        """Every account's devices if all are cached, else None (ask `account_devices`)."""
        if self.shared:
            return None
        lists = self._lists
        try:
            return {name: lists[name] for name in accounts}
        except KeyError:
            return None

    def _note(self, account: str, count: int, gone: Sequence[str] = ()) -> None:
        for name in gone:
            self._forget(name)
        self._drop_devices(account)
        if count > 1:
            self._multi.add(account)
        else:
            self._multi.discard(account)

    def _forget(self, name: str) -> None:
        super()._forget(name)
        self._drop_devices(split_principal(name)[0])

    def _drop_devices(self, account: str) -> None:
        self._lists.pop(account, None)
        self._lists_epoch += 1

    async def list_principals(self) -> list[UserRecord]:
        """Every credential: accounts and their linked devices."""
        return await self._backend.list_principals()

    async def account_devices(self, accounts: Sequence[str]) -> dict[str, AccountDevices]:
        """Each existing account's devices and stored list (unknown names are left out)."""
        epoch = self._lists_epoch
        found = await self._backend.account_devices(accounts)
        if epoch == self._lists_epoch and not self.shared:  # no change landed meanwhile
            self._lists.update(found)
        return found

    async def account_identity(self, account: str) -> IdentityPublic | None:
        """The identity record of one of the account's devices (they share the account's
        Ed25519 key), device 1's if it has one."""
        return await self._backend.account_identity(account)

    async def watch(self, watcher: str, account: str) -> None:
        """`watcher` fetched the account's list: it hears of the next change."""
        await self._backend.watch(watcher, account)

    async def device_seen(self, account: str) -> dict[int, int]:
        """device id -> last login (Unix seconds, 0 never)."""
        return await self._backend.device_seen(account)

    async def list_devices(self, account: str) -> list[tuple[int, int, int | None]]:
        """(device id, linked at, last login) for `hushwire-admin list-devices`."""
        return await self._backend.list_devices(account)

    async def store_device_list(
        self,
        account: str,
        version: int,
        signed: SignedDeviceList,
        *,
        removed: frozenset[int],
        now: int,
    ) -> list[str]:
        """Store a newer list and unlink the devices it leaves out (one transaction;
        STALE_DEVICE_LIST if another got in first). Returns the watchers to tell."""
        watchers, gone, count = await self._backend.store_device_list(
            account, version, signed, removed=removed, now=now
        )
        self._note(account, count, gone)
        return watchers

    async def add_device(
        self,
        account: str,
        device: int,
        version: int,
        signed: SignedDeviceList,
        *,
        token_hash: bytes,
        salt: bytes,
        now: int,
    ) -> list[str]:
        """Create a linked device with its credential and mailbox, and store the list
        that names it (one transaction). Returns the watchers to tell."""
        watchers, count = await self._backend.add_device(
            account,
            device,
            version,
            signed,
            name=principal(account, device),
            token_hash=token_hash,
            salt=salt,
            now=now,
        )
        self._note(account, count)
        return watchers

    async def reset_devices(self, account: str, *, keep: int) -> frozenset[int]:
        """A new identity: unlink every device but `keep` and drop the account's list."""
        ids, gone = await self._backend.reset_devices(account, keep=keep)
        self._note(account, 1, gone)
        return frozenset(ids)

    async def remove_device(self, account: str, device: int) -> None:
        """Operator removal (`hushwire-admin remove-device`): credential, mailbox and keys
        go; the account's signed list still names the device until one of its devices
        signs a new one (senders' envelopes for it are dropped meanwhile)."""
        name, count = await self._backend.remove_device(account, device)
        self._note(account, count, (name,))
