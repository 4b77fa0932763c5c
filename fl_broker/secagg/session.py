"""A site's side of one secure-aggregation round: its fresh keys and self-mask seed, the shares it holds
of the other sites' secrets, the masks it adds to its update, and what it reveals when the server asks it
to unmask. Each method checks the phase's fields first (SecAggError naming what is wrong)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fl_broker.errors import DecodeError, SecAggError
from fl_broker.secagg import crypto, protocol, shamir
from fl_broker.secagg.protocol import PublicKeys
from fl_broker.wire import codec


@dataclass
class SiteRound:
    """One site's secrets and view of one round (run, round)."""

    site: str
    run: int
    round: int
    c_key: crypto.KeyPair = field(default_factory=crypto.KeyPair.generate)  # seals shares
    s_key: crypto.KeyPair = field(default_factory=crypto.KeyPair.generate)  # agrees masks
    self_seed: bytes = field(default_factory=crypto.random_seed)
    holders: list[str] = field(default_factory=list)  # U1: the sites the secrets are shared among
    threshold: int = 0
    public: dict[str, PublicKeys] = field(default_factory=dict)
    held: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # owner -> (self-seed share, key share)
    maskers: list[str] = field(default_factory=list)  # U2: the sites whose masks cancel with this one's
    revealed: tuple[frozenset[str], frozenset[str]] | None = None  # the (survivors, dropped) answered

    def advertise(self) -> dict[str, bytes]:
        """Phase 1: the two public keys."""
        return PublicKeys(c=self.c_key.public_bytes(), s=self.s_key.public_bytes()).to_wire()

    def share(self, fields: dict[str, Any]) -> dict[str, bytes]:
        """Phase 2: this site's secrets split among the holders, one sealed share pair per other holder."""
        where = "share task"
        holders = protocol.sites_of(fields, "sites", where)
        threshold = protocol.int_of(fields, "threshold", where)
        sealed: dict[str, bytes] = {}
        raw = fields.get("public_keys")
        if not isinstance(raw, dict) or sorted(raw) != holders:
            raise SecAggError(f"{where}.public_keys: expected the keys of exactly {holders}")
        self.public = {site: PublicKeys.from_wire(raw[site], f"{where}.public_keys[{site!r}]") for site in holders}
        self._check_holders(holders, threshold)
        self.holders, self.threshold = holders, threshold
        seed_shares = shamir.split(self.self_seed, len(holders), threshold)
        key_shares = shamir.split(self.s_key.private_bytes(), len(holders), threshold)
        for index, peer in enumerate(holders):
            pair = (seed_shares[index], key_shares[index])
            if peer == self.site:
                self.held[peer] = pair
                continue
            plaintext = codec.encode({"b": pair[0], "s": pair[1]})
            sealed[peer] = crypto.encrypt(self._seal_key(peer), plaintext, self._sealed(self.site, peer))
        return sealed

    def _check_holders(self, holders: list[str], threshold: int) -> None:
        if self.site not in holders:
            raise SecAggError(f"share task: {self.site} is not among the key holders {holders}")
        mine = PublicKeys(c=self.c_key.public_bytes(), s=self.s_key.public_bytes())
        if self.public[self.site] != mine:
            raise SecAggError(f"share task: the keys given for {self.site} are not the ones it advertised")
        every = [key for keys in self.public.values() for key in (keys.c, keys.s)]
        if len(set(every)) != len(every):
            raise SecAggError("share task: two sites were given the same public key")
        lowest = protocol.effective_threshold(0, len(holders))
        if not lowest <= threshold <= len(holders):
            raise SecAggError(
                f"share task: threshold {threshold} for {len(holders)} holders; it must be {lowest} .. {len(holders)}"
            )

    def open_shares(self, fields: dict[str, Any]) -> None:
        """Phase 3, before training: keep the shares the other maskers sealed for this site."""
        where = "train task"
        maskers = protocol.sites_of(fields, "sites", where)
        if not self.holders:
            raise SecAggError(f"{where}: this site shared no keys for round {self.round} (restarted since?)")
        if self.site not in maskers or not set(maskers) <= set(self.holders) or len(maskers) < self.threshold:
            raise SecAggError(
                f"{where}.sites: {maskers} must include {self.site}, be among {self.holders} and number at least "
                f"the threshold {self.threshold}"
            )
        sealed = fields.get("sealed")
        if not isinstance(sealed, dict):
            raise SecAggError(f"{where}.sealed: expected a map of sender -> receiver -> sealed share")
        for peer in maskers:
            if peer != self.site:
                self.held[peer] = self._open(peer, sealed.get(peer), where)
        self.maskers = maskers

    def _open(self, peer: str, theirs: Any, where: str) -> tuple[bytes, bytes]:
        box = theirs.get(self.site) if isinstance(theirs, dict) else None
        if not isinstance(box, bytes):
            raise SecAggError(f"{where}.sealed[{peer!r}]: no share sealed for {self.site}")
        plaintext = crypto.decrypt(self._seal_key(peer), box, self._sealed(peer, self.site))
        try:
            opened = codec.decode(plaintext)
        except DecodeError as exc:  # sealed by the peer itself, so only a broken peer gets here
            raise SecAggError(f"{where}.sealed[{peer!r}]: the opened share does not decode: {exc}") from exc
        if not isinstance(opened, dict):
            raise SecAggError(f"{where}.sealed[{peer!r}]: the opened share is not a map")
        pair = protocol.bytes_map(opened, f"{where}: {peer}'s share", shamir.SHARE_BYTES)
        if sorted(pair) != ["b", "s"]:
            raise SecAggError(f"{where}: {peer}'s share holds {sorted(pair)}, expected b and s")
        return pair["b"], pair["s"]

    def mask(self, arrays: dict[str, np.ndarray]) -> None:
        """Phase 3, after training: add the self mask and the pairwise masks to each quantized array."""
        seeds = {peer: self._mask_seed(peer) for peer in self.maskers if peer != self.site}
        for name in sorted(arrays):
            flat = arrays[name].reshape(-1)
            crypto.add_mask(flat, self.self_seed, name, +1)
            for peer, seed in seeds.items():
                crypto.add_mask(flat, seed, name, protocol.mask_sign(self.site, peer))

    def reveal(self, fields: dict[str, Any]) -> dict[str, dict[str, bytes]]:
        """Phase 4: the shares of the survivors' self-mask seeds and of the dropped sites' mask keys. Never
        both for one site, and only one answer per round: a second request naming other survivors would be
        a server trying to learn a survivor's update."""
        where = "unmask task"
        survivors = frozenset(protocol.sites_of(fields, "survivors", where))
        dropped = frozenset(protocol.sites_of(fields, "dropped", where))
        if survivors & dropped or survivors | dropped != set(self.maskers) or self.site not in survivors:
            raise SecAggError(
                f"{where}: survivors {sorted(survivors)} and dropped {sorted(dropped)} must split the maskers "
                f"{self.maskers}, with {self.site} among the survivors"
            )
        if len(survivors) < self.threshold:
            raise SecAggError(f"{where}: {len(survivors)} survivors, fewer than the threshold {self.threshold}")
        if self.revealed is not None and self.revealed != (survivors, dropped):
            raise SecAggError(f"{where}: asked again for round {self.round} with other survivors; refused")
        self.revealed = (survivors, dropped)
        return {
            "self_mask_shares": {site: self.held[site][0] for site in sorted(survivors)},
            "key_shares": {site: self.held[site][1] for site in sorted(dropped)},
        }

    def _seal_key(self, peer: str) -> bytes:
        return self.c_key.agree(self.public[peer].c, protocol.seal_info(self.run, self.round, self.site, peer))

    def _mask_seed(self, peer: str) -> bytes:
        return self.s_key.agree(self.public[peer].s, protocol.mask_info(self.run, self.round, self.site, peer))

    def _sealed(self, sender: str, receiver: str) -> bytes:
        return protocol.sealed_for(self.run, self.round, sender, receiver)
