"""What a configuration describes: the Oracle providers and the gateway configuration holding
them.

Pure data: parsing lives in `config` and the modules it calls, so a module that only needs a
`Provider` does not depend on YAML, the environment or their error messages.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from .adapt import ModelRules
from .aliases import Alias
from .keys import KeyRing
from .resilience import FailoverPolicy, RetryPolicy, Timeouts

ModelsMode = Literal["fallback", "allowlist"]
MODELS_MODES: tuple[ModelsMode, ...] = ("fallback", "allowlist")
DEFAULT_MODELS_MODE: ModelsMode = "fallback"
DEFAULT_MODELS_REFRESH_SECONDS = 600.0
DEFAULT_OCI_CONFIG_FILE = "~/.oci/config"


class DiscoveryMethod(StrEnum):
    """How a provider's models are discovered (the `discovery:` key)."""

    MODELS = "models"  # ask {base_url}/models with the provider key
    OCI = "oci"  # the OCI control plane, with OCI request signing


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key: str = field(repr=False)
    models: tuple[str, ...]
    models_mode: ModelsMode = DEFAULT_MODELS_MODE
    models_refresh_seconds: float = DEFAULT_MODELS_REFRESH_SECONDS
    timeouts: Timeouts = field(default_factory=Timeouts)
    region: str | None = None  # given, or read from an Oracle inference base URL
    project: str | None = None  # an OCI Generative AI project OCID, sent as OpenAI-Project
    discovery: DiscoveryMethod = DiscoveryMethod.MODELS
    compartment_id: str | None = None
    oci_config_file: str = DEFAULT_OCI_CONFIG_FILE
    oci_profile: str = "DEFAULT"
    control_plane_url: str | None = None
    rules: ModelRules = field(default_factory=ModelRules)

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def address(self) -> str:
        """host:port, for messages about connections."""
        return f"{self.host}:{urlsplit(self.base_url).port or 443}"


@dataclass(frozen=True)
class GatewayConfig:
    providers: tuple[Provider, ...]
    warnings: tuple[str, ...] = ()
    source: str | None = None
    # Keys clients must present to use the gateway (master and client keys); none: open.
    keys: KeyRing = field(default_factory=KeyRing, repr=False)
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    failover: FailoverPolicy = field(default_factory=FailoverPolicy)
    aliases: tuple[Alias, ...] = ()


def serves(providers: Iterable[Provider], model: str) -> bool:
    """Whether a configured provider lists the model id (bare, or pinned as provider/model)."""
    prefix, _, bare = model.partition("/")
    for provider in providers:
        if model in provider.models or (provider.name == prefix and bare in provider.models):
            return True
    return False
