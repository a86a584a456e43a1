"""The model inventory: which provider serves which model id (aliases included), and what
/v1/models lists.

An `Inventory` is an immutable snapshot, rebuilt whenever configuration or discovery changes, so
a request always sees one consistent view without locks.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from .aliases import Alias, find_alias
from .providers import Provider


@dataclass(frozen=True)
class ListedModel:
    id: str
    owned_by: str
    created: int


@dataclass(frozen=True)
class Target:
    """Where a model id the client may send goes: a provider and the id Oracle knows."""

    provider: Provider
    upstream_model: str


def provider_models(provider: Provider, discovered: tuple[str, ...] | None) -> tuple[str, ...]:
    """Configured models, plus the discovered ones unless the provider is an allowlist."""
    if provider.models_mode == "allowlist" or not discovered:
        return provider.models
    return provider.models + tuple(m for m in discovered if m not in provider.models)


@dataclass(frozen=True)
class Inventory:
    providers: tuple[Provider, ...]
    models: Mapping[str, tuple[str, ...]]
    created: int
    aliases: tuple[Alias, ...] = ()
    listing: tuple[ListedModel, ...] = field(init=False)
    # Model id as a client sends it -> the providers to try, in order: every provider serving a
    # bare id (the first is preferred, the others are failover), or the one a pinned id names.
    targets: Mapping[str, tuple[Target, ...]] = field(init=False)

    def __post_init__(self) -> None:
        listing: list[ListedModel] = []
        targets: dict[str, tuple[Target, ...]] = {}
        for provider in self.providers:
            for model in self.models.get(provider.name, ()):
                target = Target(provider, model)
                pinned = f"{provider.name}/{model}"
                targets[pinned] = (target,)
                if model not in targets:
                    listing.append(ListedModel(model, provider.name, self.created))
                else:
                    listing.append(ListedModel(pinned, provider.name, self.created))
                targets[model] = (*targets.get(model, ()), target)
        listed = {m.id for m in listing}
        for alias in self.aliases:  # exact ones are listed, as soon as their target is served
            found = targets.get(alias.target)
            if found and not alias.is_glob and alias.name not in listed:
                listing.append(ListedModel(alias.name, found[0].provider.name, self.created))
        object.__setattr__(self, "listing", tuple(listing))
        object.__setattr__(self, "targets", targets)

    @property
    def model_count(self) -> int:
        return sum(len(models) for models in self.models.values())

    def alias_for(self, model: str) -> Alias | None:
        return find_alias(self.aliases, model, lambda name: name in self.targets)

    def find(self, model: str) -> tuple[Target, ...]:
        """Where a requested name goes: through its alias, if one applies, else itself."""
        alias = self.alias_for(model)
        return self.targets.get(alias.target if alias else model, ())

    def provider(self, name: str) -> Provider | None:
        return next((p for p in self.providers if p.name == name), None)


def build_inventory(
    providers: tuple[Provider, ...],
    discovered: Mapping[str, tuple[str, ...]],
    created: int,
    aliases: tuple[Alias, ...] = (),
) -> Inventory:
    models = {p.name: provider_models(p, discovered.get(p.name)) for p in providers}
    return Inventory(providers, models, created, aliases)
