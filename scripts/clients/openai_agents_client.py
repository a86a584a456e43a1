"""openai-agents: Runner.run_sync with the default model and settings (the Responses API), then
the trace export the SDK sends to /v1/traces/ingest (the gateway answers 204 and drops it).

Through a base URL the SDK still exports traces to https://api.openai.com/v1/traces/ingest, so
the trace exporter is pointed at the same base URL (as an app using a gateway would do): nothing
leaves for OpenAI."""

import os
from importlib.metadata import version

import report


def main() -> None:
    args = report.arguments(__doc__)
    if args.base_url:
        os.environ["OPENAI_BASE_URL"] = args.base_url  # read by the SDK's default client
    if args.model:
        os.environ["OPENAI_DEFAULT_MODEL"] = args.model

    from agents import Agent, Runner, set_trace_processors
    from agents.tracing import get_trace_provider
    from agents.tracing.processors import (
        BackendSpanExporter,
        BatchTraceProcessor,
        default_exporter,
    )

    report.version(version("openai-agents"))
    if args.base_url:
        exporter = BackendSpanExporter(endpoint=args.base_url.rstrip("/") + "/traces/ingest")
        set_trace_processors([BatchTraceProcessor(exporter)])
    else:
        exporter = default_exporter()
    statuses: list[int] = []
    # Watch what the exporter's own HTTP client gets back (it only logs failures).
    exporter._client.event_hooks["response"].append(lambda r: statuses.append(r.status_code))

    def run() -> tuple[str, str]:
        agent = Agent(name="Assistant", instructions="You are a helpful assistant.")
        return str(Runner.run_sync(agent, "Say hello").final_output), ""

    report.call("Runner.run_sync", args.expect, run)
    get_trace_provider().force_flush()
    if statuses and all(s < 300 for s in statuses):
        detail = f"{len(statuses)} POST, status {', '.join(sorted({str(s) for s in statuses}))}"
        report.emit({"call": "trace export", "ok": True, "detail": detail})
    else:
        detail = f"statuses {statuses}" if statuses else "no trace export was answered"
        report.emit({"call": "trace export", "ok": False, "detail": detail})


if __name__ == "__main__":
    main()
