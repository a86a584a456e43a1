"""mitmweb's "GoModel" content view of a gateway call: what the client asked (its URL and model),
where the call went (provider, upstream model) and how (attempts), above the body itself, JSON
indented or a stream as its events. Chosen by default for gateway flows; other flows never see
it."""

import json

from mitmproxy.contentviews import Contentview, Metadata

from . import safejson


class GoModelContentview(Contentview):
    syntax_highlight = "yaml"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        call = gateway_metadata(metadata)
        if call is None:
            raise ValueError("not a gateway call")
        lines = [
            f"client:     {call.get('method', '')} {call.get('client_url', '')}",
            f"model:      {call.get('requested_model', '')}"
            f" -> {call.get('provider', '?')} {call.get('upstream_model', '')}",
            f"endpoint:   {call.get('endpoint', '')}{' (stream)' if call.get('stream') else ''}",
        ]
        if attempts := call.get("attempts"):
            lines.append(f"attempts:   {', '.join(map(str, attempts))}")
        if metadata.flow is not None and metadata.flow.comment:
            lines.append(f"comment:    {metadata.flow.comment}")
        return "\n".join([*lines, "", body_text(data)])

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        return 2 if gateway_metadata(metadata) is not None else -1


def gateway_metadata(metadata: Metadata) -> dict | None:
    flow = metadata.flow
    call = flow.metadata.get("gomodel") if flow is not None else None
    return call if isinstance(call, dict) and "client_url" in call else None


def body_text(data: bytes) -> str:
    """JSON indented; an event stream one event a line; anything else as text."""
    try:
        return json.dumps(safejson.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    text = data.decode("utf-8", "replace")
    events = [line for line in text.splitlines() if line.strip()]
    return "\n".join(events)
