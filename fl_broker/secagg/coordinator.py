"""The server's side of one secure-aggregation round: it relays keys and sealed shares between the sites
(it cannot open them), and at the end rebuilds from the survivors' shares exactly the masks that do not
cancel in the sum, and removes them. It never holds a site's update: only the masked ones and their sum."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fl_broker.errors import SecAggError
from fl_broker.secagg import crypto, protocol, shamir
from fl_broker.secagg.protocol import PublicKeys
from fl_broker.wire.messages import DXO

log = logging.getLogger(__name__)


@dataclass
class Reveal:
    """One survivor's shares: of the survivors' self-mask seeds and of the dropped sites' mask keys."""

    self_mask_shares: dict[str, bytes]
    key_shares: dict[str, bytes]


@dataclass
class KeyRound:
    """What the server knows of one round's keys: U1 (public keys), U2 (sealed shares), the threshold."""

    run: int
    round: int
    configured_threshold: int
    public: dict[str, PublicKeys] = field(default_factory=dict)  # U1
    sealed: dict[str, dict[str, bytes]] = field(default_factory=dict)  # U2: sender -> receiver -> sealed
    threshold: int = 0
    dropped: list[str] = field(default_factory=list)  # U2 - U3, once the train phase is over

    @property
    def holders(self) -> list[str]:
        """U1, sorted: the Shamir x of a site is its place in this list."""
        return sorted(self.public)

    @property
    def maskers(self) -> list[str]:
        """U2, sorted: the sites whose masks are in the round."""
        return sorted(self.sealed)

    # ---- phase 1: keys ------------------------------------------------------------------------------------

    @staticmethod
    def parse_keys(site: str, dxo: DXO) -> PublicKeys:
        """A site's advertised public keys."""
        return PublicKeys.from_wire(protocol.answer_data(dxo, protocol.ADVERTISE_TASK), f"{site}'s keys")

    def take_keys(self, keys: dict[str, PublicKeys]) -> None:
        """U1 and the threshold; SecAggError if too few sites advertised keys."""
        every = [key for pair in keys.values() for key in (pair.c, pair.s)]
        if len(set(every)) != len(every):
            raise SecAggError("two sites advertised the same public key")
        self.public = dict(keys)
        self.threshold = protocol.effective_threshold(self.configured_threshold, len(keys))
        self._enough(len(keys), "sites advertised keys")

    def share_fields(self) -> dict[str, Any]:
        """The share task's header: U1, the threshold and every U1 site's public keys."""
        public = {site: keys.to_wire() for site, keys in self.public.items()}
        return {"sites": self.holders, "threshold": self.threshold, "public_keys": public}

    # ---- phase 2: sealed shares ---------------------------------------------------------------------------

    def parse_sealed(self, site: str, dxo: DXO) -> dict[str, bytes]:
        """A site's sealed shares: one for each other key holder."""
        data = protocol.answer_data(dxo, protocol.SHARE_TASK)
        sealed = protocol.bytes_map(data.get("sealed"), f"{site}'s sealed shares")
        others = sorted(set(self.holders) - {site})
        if sorted(sealed) != others:
            raise SecAggError(f"{site}'s sealed shares are for {sorted(sealed)}, expected {others}")
        return sealed

    def take_sealed(self, sealed: dict[str, dict[str, bytes]]) -> None:
        """U2; SecAggError if too few sites shared their secrets."""
        self.sealed = dict(sealed)
        self._enough(len(sealed), "sites shared their secrets")

    def train_fields(self, fraction_bits: int) -> dict[str, Any]:
        """The train task's header: U2, the threshold, the precision and every sealed share of U2."""
        sealed = {
            sender: {r: box for r, box in boxes.items() if r in self.sealed} for sender, boxes in self.sealed.items()
        }
        return {"sites": self.maskers, "threshold": self.threshold, "fraction_bits": fraction_bits, "sealed": sealed}

    # ---- phase 4: unmasking -------------------------------------------------------------------------------

    def unmask_fields(self, survivors: list[str]) -> dict[str, Any]:
        """The unmask task's header; SecAggError if fewer survivors than the threshold (the masks of the
        dropped sites could not be removed, and fewer updates than that must not be summed)."""
        dropped = self.dropped = sorted(set(self.maskers) - set(survivors))
        if len(survivors) < self.threshold:
            raise SecAggError(
                f"{len(survivors)} of {len(self.maskers)} masked updates arrived, below the threshold "
                f"{self.threshold}; dropped out after the masks were agreed: {', '.join(dropped)}"
            )
        return {"survivors": sorted(survivors), "dropped": dropped}

    def parse_reveal(self, site: str, dxo: DXO, survivors: list[str]) -> Reveal:
        """A survivor's shares, for exactly the sites it was asked about."""
        data = protocol.answer_data(dxo, protocol.UNMASK_TASK)
        size = shamir.SHARE_BYTES
        reveal = Reveal(
            self_mask_shares=protocol.bytes_map(data.get("self_mask_shares"), f"{site}'s self-mask shares", size),
            key_shares=protocol.bytes_map(data.get("key_shares"), f"{site}'s key shares", size),
        )
        dropped = sorted(set(self.maskers) - set(survivors))
        if sorted(reveal.self_mask_shares) != sorted(survivors) or sorted(reveal.key_shares) != dropped:
            raise SecAggError(f"{site} revealed shares for other sites than the survivors and dropped asked for")
        return reveal

    def remove_masks(self, sums: dict[str, np.ndarray], reveals: dict[str, Reveal], survivors: list[str]) -> None:
        """Subtract from `sums` every mask that does not cancel: each survivor's self mask, and the masks the
        survivors share with each dropped site (rebuilt from that site's reconstructed key)."""
        self._enough(len(reveals), "survivors revealed their shares")
        x = {site: protocol.holder_x(self.holders, site) for site in reveals}
        for owner in survivors:
            seed = shamir.combine({x[s]: r.self_mask_shares[owner] for s, r in reveals.items()}, self.threshold)
            _apply(sums, seed, -1)
        for owner in sorted(set(self.maskers) - set(survivors)):
            key = crypto.KeyPair.from_private_bytes(
                shamir.combine({x[s]: r.key_shares[owner] for s, r in reveals.items()}, self.threshold)
            )
            if key.public_bytes() != self.public[owner].s:
                raise SecAggError(f"the shares of {owner}'s mask key do not rebuild the key it advertised")
            for peer in survivors:
                seed = key.agree(self.public[peer].s, protocol.mask_info(self.run, self.round, owner, peer))
                _apply(sums, seed, -protocol.mask_sign(peer, owner))
            log.info("round %d: removed the masks of %s, which dropped out", self.round, owner)

    def _enough(self, count: int, what: str) -> None:
        if count < self.threshold or count < 2:
            raise SecAggError(f"only {count} {what}, the threshold is {self.threshold}")


def _apply(sums: dict[str, np.ndarray], seed: bytes, sign: int) -> None:
    for name, total in sums.items():
        crypto.add_mask(total.reshape(-1), seed, name, sign)
