"""hello-pt's data: scikit-learn's handwritten digits (1,797 8x8 images that ship inside the package, so
nothing is downloaded), split the same way on every participant from a seed:

- a held-out test set (`test_fraction` of each digit), used only by the server to test the global model;
- the rest across `num_sites` sites with label skew: each digit's images are shared out in proportions
  drawn from a Dirichlet(`alpha`) distribution (small alpha: each site sees mostly a few digits);
- each site's shard split again into its training and local validation images (`val_fraction`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

ATTEMPTS = 100  # redraws of the Dirichlet split until every site has min_samples images


@dataclass(frozen=True)
class SiteData:
    """One site's images (float32, N x 1 x 8 x 8, in [0, 1]) and labels (int64)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


class DigitsShards:
    """The seeded non-IID split of the digits data described above."""

    def __init__(
        self,
        num_sites: int = 2,
        alpha: float = 0.5,
        seed: int = 0,
        test_fraction: float = 0.2,
        val_fraction: float = 0.2,
        min_samples: int = 50,
    ) -> None:
        if num_sites < 1 or alpha <= 0 or not (0 < test_fraction < 1 and 0 < val_fraction < 1):
            raise ValueError("need num_sites >= 1, alpha > 0 and test_fraction, val_fraction in (0, 1)")
        from sklearn.datasets import load_digits  # here: the server's config check need not import sklearn

        digits = load_digits()
        self.x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
        self.y = digits.target.astype(np.int64)
        self.num_sites = num_sites
        rng = np.random.default_rng(seed)
        self.test_index, pool = _stratified_split(self.y, test_fraction, rng)
        self.site_index = _label_skew(self.y, pool, num_sites, alpha, min_samples, rng)
        self.val_fraction = val_fraction

    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out test images and labels."""
        return self.x[self.test_index], self.y[self.test_index]

    def site(self, site_name: str) -> SiteData:
        """The training and validation data of `site_name` (site-1 .. site-N)."""
        index = self.site_index[self.site_number(site_name) - 1]
        cut = int(round(len(index) * (1 - self.val_fraction)))
        train, val = index[:cut], index[cut:]
        return SiteData(self.x[train], self.y[train], self.x[val], self.y[val])

    def site_number(self, site_name: str) -> int:
        """N of site-N; ValueError if the split has no shard for that site."""
        found = re.fullmatch(r".*?(\d+)", site_name)
        number = int(found.group(1)) if found else 0
        if not 1 <= number <= self.num_sites:
            raise ValueError(
                f"{site_name!r} has no shard: the data is split across num_sites={self.num_sites} sites "
                f"(site-1 .. site-{self.num_sites}); set num_sites in the dataset args of config_fed_client.json"
            )
        return number

    def label_counts(self, site_name: str) -> list[int]:
        """How many images of each digit 0-9 the site has (training and validation)."""
        index = self.site_index[self.site_number(site_name) - 1]
        return np.bincount(self.y[index], minlength=10).tolist()


def _stratified_split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(held out, rest): `fraction` of each label's indices, drawn at random."""
    held, rest = [], []
    for label in np.unique(y):
        index = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(len(index) * fraction))
        held.append(index[:cut])
        rest.append(index[cut:])
    return np.sort(np.concatenate(held)), np.concatenate(rest)


def _label_skew(
    y: np.ndarray, pool: np.ndarray, sites: int, alpha: float, min_samples: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """`pool` shared out across `sites`, each label by Dirichlet(alpha) proportions, redrawn until every
    site has at least `min_samples` indices; each site's indices in a random order."""
    for _ in range(ATTEMPTS):
        shards: list[list[int]] = [[] for _ in range(sites)]
        for label in np.unique(y[pool]):
            index = rng.permutation(pool[y[pool] == label])
            cuts = (np.cumsum(rng.dirichlet([alpha] * sites))[:-1] * len(index)).astype(int)
            for shard, part in zip(shards, np.split(index, cuts), strict=True):
                shard.extend(part.tolist())
        if min(len(shard) for shard in shards) >= min_samples:
            return [rng.permutation(np.array(shard, dtype=np.int64)) for shard in shards]
    raise ValueError(f"no split gives each of {sites} sites {min_samples} images: lower min_samples or raise alpha")
