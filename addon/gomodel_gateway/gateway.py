"""The gateway's request hooks, a mitmproxy addon of their own: each translates between a flow
and its `Call`, and the call service (service.py) decides.

Life of a gateway request:
- requestheaders: the call is admitted from its headers (origin, key, path, method, declared
  size). Its body is buffered (routing needs it); a refusal is made without reading the body
  (the flow is pointed at the relay's refusal end point, its body streamed into nothing).
- request: the call is served: answered locally, refused, sent to Oracle (its answer set as the
  response), or handed to the stream relay (the flow pointed at it, so that mitmproxy streams
  the answer through).
- responseheaders / response / error: the flow shows what really went to Oracle and the answer
  as the client got it (a stream's body kept up to gomodel_stream_body_size); the call is
  recorded once (flows.CallDesk.finish).
Replays (mitmweb's replay button, `mitmdump -C`) of gateway flows go through the gateway again.
Every hook fails closed: an exception answers the client with a 502 and forwards nothing.
"""

from mitmproxy import http

from .call import Call, Ending
from .connections import Connections
from .errors import GatewayError
from .exposure import cors_headers
from .flows import CallDesk, Stage, fail_closed, for_gateway, restore_replay
from .keys import ANONYMOUS_KEY
from .lifecycle import Runtime
from .outcomes import Body
from .upstream import FRAMING, is_returned


class Gateway:
    def __init__(self, runtime: Runtime, desk: CallDesk, connections: Connections) -> None:
        self.runtime, self.desk, self.connections = runtime, desk, connections

    @fail_closed(Stage.HEADERS)
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow in self.desk.calls:  # answered, or refused by the port guard
            return
        replay = restore_replay(flow)
        if not replay and not for_gateway(flow, self.runtime.hosts):
            return
        request = flow.request
        request.stream = False  # buffered: routing needs it, nothing streams to the original host
        authorization = request.headers.get("authorization")  # before start() redacts it
        call = self.desk.start(flow)
        try:
            answer = self.desk.service.admit(
                call, request.method, request.path, request.headers, authorization, replay
            )
        except GatewayError as e:
            self.desk.refuse_unread(flow, call, e)
            return
        if answer is not None:
            self.desk.carry_out(flow, call, answer)
        elif call.key is not None:  # a stranger's /health does not hold the connection open
            # A master key's connection is its holder's to keep; a client key's, once a call
            # of its went to Oracle (see request).
            keyed = call.key.admin and call.key is not ANONYMOUS_KEY
            self.connections.call_in_progress(flow, keyed)

    @fail_closed(Stage.REQUEST)
    async def request(self, flow: http.HTTPFlow) -> None:
        call = self.desk.calls.get(flow)
        if call is None or call.request is None or flow.response:
            return
        if self.runtime.starting:  # came in as the proxy started
            await self.runtime.ready.wait()
        request = flow.request
        body = Body(
            request.raw_content or b"",
            request.headers.get("content-type", ""),
            list(request.headers.items(multi=True)),
        )
        outcome = await self.desk.service.serve(call, body)
        if call.route is not None:  # sent with a gateway key: the connection is its client's
            self.connections.call_in_progress(flow, call.key is not ANONYMOUS_KEY)
        self.desk.carry_out(flow, call, outcome)

    @fail_closed(Stage.RESPONSE)
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = self.desk.calls.get(flow)
        if call is None or flow.response is None:
            return
        if call.origin:
            flow.response.headers.update(cors_headers(call.origin))
        if call.relay_path is None:
            return
        # The relay answered: the request has gone, and the relay's own headers are not for
        # clients. Streams pass through as they come (the relay watches, filters and keeps them).
        for name in list(flow.response.headers):
            if not (is_returned(name) or name.lower() in FRAMING):
                del flow.response.headers[name]
        call.first_byte = self.desk.service.clock()  # the clock the call started by
        self.desk.show_upstream(flow, call)
        if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
            flow.response.stream = True

    @fail_closed(Stage.RESPONSE)
    def response(self, flow: http.HTTPFlow) -> None:
        self.connections.call_ended(flow)
        call = self.desk.calls.get(flow)
        if call is None or flow.response is None or call.finished:
            return
        if call.refusal:
            self.answer_refusal(flow, call, call.refusal)
            return
        if call.kept:  # the stream as the client got it, for mitmweb and flow files
            flow.response.content = call.kept.content()
        self.desk.finish(flow, call)

    def answer_refusal(self, flow: http.HTTPFlow, call: Call, error: GatewayError) -> None:
        """The relay ended a refused request: show it as the client sent it, and answer it."""
        self.desk.put_back(flow, call)
        self.desk.refuse(flow, call, error)
        if call.origin:
            flow.response.headers.update(cors_headers(call.origin))
        if flow.request.http_version.startswith("HTTP/1"):
            flow.response.headers["connection"] = "close"

    @fail_closed(Stage.RESPONSE)
    def error(self, flow: http.HTTPFlow) -> None:
        self.connections.call_ended(flow)
        call = self.desk.calls.get(flow)
        if call is None or call.finished:
            return
        if call.relay_path:  # the client left before mitmproxy fetched its stream
            self.runtime.relay.discard(call.relay_path)
        self.desk.show_upstream(flow, call)
        if call.kept and flow.response:
            flow.response.content = call.kept.content()
        if flow.error and call.stream and call.stream.done:
            # A client may close as soon as it reads the last event, before mitmproxy has read
            # the end of the stream: it got the whole answer.
            self.desk.finish(flow, call, "client closed after the last event")
            return
        call.error = Ending.CLIENT_GONE if flow.error else Ending.ENDED_EARLY
        self.desk.finish(flow, call, f"ended early: {flow.error.msg if flow.error else '-'}")
