"""OCI regions: the Generative AI inference URL and control-plane URL for a region identifier.

Regions in other realms live under other domains (EU Sovereign Cloud, UK and US government
clouds). The list of regions offering Generative AI comes from Oracle's documentation; an unknown
region still works (a warning says so) since Oracle adds regions over time.
"""

import re
from urllib.parse import urlsplit

REGION_ID = re.compile(r"^[a-z]{2,}(-[a-z]+)+-\d+$")
COMMERCIAL_DOMAIN = "oraclecloud.com"
# Realms other than the commercial one (oc1), by region.
REALM_DOMAINS = {
    "eu-frankfurt-2": "oraclecloud.eu",  # EU Sovereign Cloud
    "eu-madrid-2": "oraclecloud.eu",
    "uk-gov-london-1": "oraclegovcloud.uk",  # UK Government Cloud
    "uk-gov-cardiff-1": "oraclegovcloud.uk",
    "us-langley-1": "oraclegovcloud.com",  # US Government Cloud
    "us-luke-1": "oraclegovcloud.com",
    "us-gov-ashburn-1": "oraclegovcloud.com",
    "us-gov-chicago-1": "oraclegovcloud.com",
    "us-gov-phoenix-1": "oraclegovcloud.com",
}
GENERATIVE_AI_REGIONS = frozenset(
    {
        "us-chicago-1",
        "us-ashburn-1",
        "us-phoenix-1",
        "sa-saopaulo-1",
        "eu-frankfurt-1",
        "uk-london-1",
        "ap-osaka-1",
        "ap-hyderabad-1",
        "me-riyadh-1",
        "me-dubai-1",
        "me-abudhabi-1",
    }
)
NO_OPENAI_COMPATIBLE_API = frozenset({"me-dubai-1"})
INFERENCE_HOST = re.compile(r"^inference\.generativeai\.([a-z0-9-]+)\.oci\.([a-z0-9.]+)$")


def domain(region: str) -> str:
    return REALM_DOMAINS.get(region, COMMERCIAL_DOMAIN)


def inference_base_url(region: str) -> str:
    """The OpenAI-compatible base URL, in the documented /20231130/actions/v1 shape."""
    return f"https://inference.generativeai.{region}.oci.{domain(region)}/20231130/actions/v1"


def control_plane_url(region: str) -> str:
    """The Generative AI management API (model listing), signed with OCI request signing."""
    return f"https://generativeai.{region}.oci.{domain(region)}/20231130"


def region_of(base_url: str) -> str | None:
    """The region an Oracle inference base URL points at, if it is one."""
    match = INFERENCE_HOST.match(urlsplit(base_url).hostname or "")
    return match.group(1) if match else None


def check_region(region: str) -> str | None:
    """ValueError for a malformed identifier; a warning for a region not known to serve the
    OpenAI-compatible API; None when all is well."""
    if not REGION_ID.match(region):
        raise ValueError(f"{region!r} is not a region identifier (e.g. us-chicago-1)")
    if region in NO_OPENAI_COMPATIBLE_API:
        return f"Oracle documents no OpenAI-compatible API in {region}"
    if region not in GENERATIVE_AI_REGIONS and region not in REALM_DOMAINS:
        known = ", ".join(sorted(GENERATIVE_AI_REGIONS - NO_OPENAI_COMPATIBLE_API))
        return f"{region} is not a region known to offer Generative AI (known: {known})"
    return None
