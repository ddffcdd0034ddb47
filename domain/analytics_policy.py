"""What each analytics subscriber receives: one policy file per subscriber, checked before anything is released."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

# What a policy may name in `receives`. The first group are quasi-identifiers: together they form the cell
# a record must share with at least k people before it is released.
QUASI_IDENTIFIERS = ("age_band", "sex", "province", "facility_province", "facility_code", "admitted_month")
ATTRIBUTES = ("visit_type", "treatment_days", "main_diagnosis", "diagnosis_chapter", "secondary_diagnoses",
              "treatment_result", "drugs", "costs")
PSEUDONYMS = ("pseudonym", "lifetime_pseudonym")
RECEIVABLE = QUASI_IDENTIFIERS + ATTRIBUTES + PSEUDONYMS
ALWAYS = ("admitted_month",)  # the release window is the admission month, so every subscriber receives it
AGE_BANDS = (5, 10)
MIN_K = 2
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class PolicyError(ValueError):
    """A subscriber policy file that cannot be used as written."""


@dataclass(frozen=True)
class SubscriberPolicy:
    """One subscriber: its name, its k, and what its records carry."""

    name: str
    receives: frozenset[str]
    k: int = 5
    age_band_years: int = 5
    cost_rounding_vnd: int = 100_000
    source: str = ""

    @property
    def quasi_identifiers(self) -> tuple[str, ...]:
        """The quasi-identifiers this subscriber receives, in a fixed order: its cell."""
        return tuple(q for q in QUASI_IDENTIFIERS if q in self.receives)

    @property
    def pseudonym_period(self) -> str | None:
        """'year' (a pseudonym per citizen per year), 'lifetime', or None (no pseudonym)."""
        if "lifetime_pseudonym" in self.receives:
            return "lifetime"
        return "year" if "pseudonym" in self.receives else None


def parse_policy(text: str, source: str) -> SubscriberPolicy:
    """A policy from the text of its TOML file; PolicyError names the file and what to fix."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not TOML ({exc})") from None
    unknown = sorted(set(data) - {"name", "receives", "k", "age_band_years", "cost_rounding_vnd"})
    if unknown:
        raise PolicyError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise PolicyError(f"{source}: name must be 1-40 lower-case letters, digits and '-', got {name!r}")
    receives = data.get("receives")
    if not isinstance(receives, list) or not all(isinstance(r, str) for r in receives):
        raise PolicyError(f"{source}: receives must be a list of field names from: {', '.join(RECEIVABLE)}")
    strange = sorted(set(receives) - set(RECEIVABLE))
    if strange:
        raise PolicyError(f"{source}: receives names {', '.join(strange)}, which no subscriber can receive; "
                          f"choose from: {', '.join(RECEIVABLE)}")
    if set(PSEUDONYMS) <= set(receives):
        raise PolicyError(f"{source}: receives both pseudonym and lifetime_pseudonym; a subscriber gets one kind")
    k, band, rounding = data.get("k", 5), data.get("age_band_years", 5), data.get("cost_rounding_vnd", 100_000)
    if not isinstance(k, int) or isinstance(k, bool) or k < MIN_K:
        raise PolicyError(f"{source}: k must be a whole number of at least {MIN_K}, got {k!r}")
    if band not in AGE_BANDS:
        raise PolicyError(f"{source}: age_band_years must be one of {AGE_BANDS}, got {band!r}")
    if not isinstance(rounding, int) or isinstance(rounding, bool) or rounding < 1000:
        raise PolicyError(f"{source}: cost_rounding_vnd must be a whole number of at least 1000, got {rounding!r}")
    return SubscriberPolicy(name, frozenset(receives) | frozenset(ALWAYS), k, band, rounding, source)


def load_policies(directory: Path) -> list[SubscriberPolicy]:
    """Every `*.toml` policy in directory, by name; two files naming one subscriber is an error."""
    if not directory.is_dir():
        raise PolicyError(f"{directory}: no such directory of subscriber policies (HEALTHBOOK_ANALYTICS_POLICY_DIR)")
    policies: dict[str, SubscriberPolicy] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: unreadable ({exc})") from None
        policy = parse_policy(text, str(path))
        if policy.name in policies:
            raise PolicyError(f"{path}: subscriber {policy.name} is already defined in {policies[policy.name].source}")
        policies[policy.name] = policy
    return list(policies.values())
