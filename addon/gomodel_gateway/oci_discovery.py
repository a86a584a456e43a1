"""Model discovery through the OCI Generative AI control plane (`discovery: oci`).

`GET {control plane}/models?compartmentId=...&capability=CHAT&lifecycleState=ACTIVE`, every page,
signed with OCI request signing by the official `oci` SDK (an optional dependency: `pip install
oci`) from the user's `~/.oci/config`. Kept: chat models that Oracle's OpenAI-compatible endpoint
serves (not Cohere's), not retired, named by their display name (e.g. openai.gpt-oss-120b).
A redirect is refused, not followed with the request's signature (`RedirectRefused`).
"""

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from .discovery import DiscoveryError, RedirectRefused
from .model_ids import is_model_id
from .providers import Provider
from .redirects import is_redirect, refused

# Vendors whose models the OpenAI-compatible endpoint does not serve.
UNSERVED_VENDORS = frozenset({"cohere"})
CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS = 5.0, 30.0


def _get(summary: Any, name: str) -> Any:
    """A field of an SDK ModelSummary, or of a plain dict in the same snake_case shape."""
    return summary.get(name) if isinstance(summary, dict) else getattr(summary, name, None)


def select_chat_models(summaries: Iterable[Any], now: datetime) -> tuple[str, ...]:
    """The model ids to serve, from the control plane's ModelSummary list, in its order."""
    models: list[str] = []
    for summary in summaries:
        name = _get(summary, "display_name")
        vendor = (_get(summary, "vendor") or "").lower()
        if not isinstance(name, str) or not is_model_id(name) or "." not in name:
            continue
        if name.startswith("ocid1."):
            continue  # a fine-tuned model is named by its OCID: not served by name
        if vendor in UNSERVED_VENDORS or name.split(".")[0] in UNSERVED_VENDORS:
            continue
        if "CHAT" not in (_get(summary, "capabilities") or []):
            continue
        if (_get(summary, "lifecycle_state") or "ACTIVE") != "ACTIVE":
            continue
        retired = _get(summary, "time_on_demand_retired")
        if isinstance(retired, datetime) and retired <= now:
            continue
        if name not in models:
            models.append(name)
    return tuple(models)


def redirect_answer(error: BaseException) -> Any | None:
    """The 3xx answer behind an SDK error, when the error is a redirect the session refused: the
    SDK wraps requests' TooManyRedirects, which holds that answer."""
    for cause in (*error.args, error.__cause__, error.__context__):
        answer = getattr(cause, "response", None)
        status = getattr(answer, "status_code", None)
        if isinstance(status, int) and is_redirect(status):
            return answer
    return None


def fetch_oci_models(
    provider: Provider, ca_file: str | None, verify: bool = True, proxy: str | None = None
) -> tuple[str, ...]:
    """Blocking: every page of the provider's compartment's chat models; DiscoveryError if not.
    `proxy`: mitmproxy's upstream proxy (with its credentials in the URL), for every request."""
    try:
        import oci  # optional, and only needed for discovery: oci
    except ImportError as e:
        raise DiscoveryError(
            "discovery: oci needs the oci package; install it with: pip install oci"
        ) from e
    client = _client(oci, provider)
    _configure_session(client.base_client.session, ca_file, verify, proxy)
    try:
        summaries = _list_chat_models(client, provider.compartment_id)
    except (
        oci.exceptions.ServiceError,
        oci.exceptions.RequestException,
        oci.exceptions.BaseRequestException,
        oci.exceptions.ClientError,
        OSError,
    ) as e:
        raise _listing_error(oci, e, provider) from e
    return select_chat_models(summaries, datetime.now(UTC))


def _client(oci: Any, provider: Provider) -> Any:
    """The SDK's client for the provider's control plane, from its OCI config file and profile;
    no retries (discovery runs again on its interval)."""
    config_file = os.path.expanduser(provider.oci_config_file)
    try:
        config = oci.config.from_file(config_file, provider.oci_profile)
        return oci.generative_ai.GenerativeAiClient(
            config,
            service_endpoint=provider.control_plane_url,
            timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
            retry_strategy=oci.retry.NoneRetryStrategy(),
        )
    except (oci.exceptions.ConfigFileNotFound, oci.exceptions.ProfileNotFound) as e:
        raise DiscoveryError(f"{config_file} [{provider.oci_profile}]: {e}") from e
    except (
        oci.exceptions.InvalidConfig,
        oci.exceptions.InvalidKeyFilePath,
        oci.exceptions.InvalidPrivateKey,
        oci.exceptions.MissingPrivateKeyPassphrase,
    ) as e:
        raise DiscoveryError(f"{config_file} [{provider.oci_profile}] is not usable: {e}") from e


def _configure_session(session: Any, ca_file: str | None, verify: bool, proxy: str | None) -> None:
    """The SDK's requests session: the gateway's TLS settings and upstream proxy, no redirects."""
    session.trust_env = False  # HTTPS_PROXY may point at this very gateway
    if proxy:
        session.proxies = {"https": proxy, "http": proxy}
    session.verify = (ca_file or True) if verify else False
    # requests follows redirects, re-sending the request's signature (to the same host) or the
    # request itself (elsewhere); with none allowed, a 3xx raises TooManyRedirects instead.
    session.max_redirects = 0


def _list_chat_models(client: Any, compartment_id: str | None) -> list[Any]:
    """Every page of the compartment's active chat models (ModelSummary objects)."""
    summaries: list[Any] = []
    page: dict[str, str] = {}
    # Page by page here: the SDK's pagination helper retries every call with its default
    # strategy (8 attempts, a minute and more of backoff), whatever the client's is.
    while True:
        response = client.list_models(
            compartment_id=compartment_id,
            capability=["CHAT"],
            lifecycle_state="ACTIVE",
            **page,
        )
        summaries.extend(response.data.items)
        if not response.has_next_page:
            return summaries
        page = {"page": response.next_page}


def _listing_error(oci: Any, error: Exception, provider: Provider) -> DiscoveryError:
    """What a failed listing says: Oracle's own error, a refused redirect, or no connection."""
    if isinstance(error, oci.exceptions.ServiceError):
        return DiscoveryError(
            f"the OCI control plane answered {error.status} {error.code}: {error.message}"
            f" (opc-request-id {error.request_id})"
        )
    if isinstance(error, oci.exceptions.RequestException):
        answer = redirect_answer(error)
        if answer is not None:
            location = answer.headers.get("location")
            reason = refused(
                answer.status_code, provider.control_plane_url, location, "an OCI request signature"
            )
            return RedirectRefused(f"the OCI control plane {reason}")
    return DiscoveryError(f"the OCI control plane could not be reached: {error}")
