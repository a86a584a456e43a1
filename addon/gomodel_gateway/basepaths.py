"""Oracle's two base paths for its OpenAI-compatible API, and which one a provider serves.

On each inference host (`https://inference.generativeai.<region>.oci.oraclecloud.com`) Oracle
documents two bases: `/20231130/actions/v1` (chat completions and responses) and `/openai/v1`
(the same, plus conversations, files, containers and vector store files; see the README's
endpoint table). A provider is configured with either. Stored resources are served on
`/openai/v1` only, so the gateway derives it from a provider's `/20231130/actions/v1` base (same
host, same prefix); a base URL ending in neither (some other server) serves no resources.
"""

import dataclasses

from .providers import Provider

ACTIONS_PATH = "/20231130/actions/v1"
OPENAI_PATH = "/openai/v1"


def openai_base_url(base_url: str) -> str | None:
    """The provider's `/openai/v1` base, or None when its base URL is not one of Oracle's."""
    if base_url.endswith(OPENAI_PATH):
        return base_url
    if base_url.endswith(ACTIONS_PATH):
        return base_url.removesuffix(ACTIONS_PATH) + OPENAI_PATH
    return None


def resource_provider(provider: Provider) -> Provider | None:
    """The provider as the resource endpoints reach it: its key, project and timeouts, on its
    `/openai/v1` base. None when it serves no resources."""
    base_url = openai_base_url(provider.base_url)
    if base_url is None:
        return None
    if base_url == provider.base_url:
        return provider
    return dataclasses.replace(provider, base_url=base_url)
