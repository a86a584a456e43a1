"""What a call costs a key with token limits, and what its answer settles (see limits.py).

`token_cost` estimates a call before it goes; `account` settles a finished call's reservation
with Oracle's usage, remembers the stored context it grew, and keeps a background run reserved
until a later call sees it finished (`settle_background`). Pure: nothing here knows about
mitmproxy.
"""

from . import safejson
from .accesslog import AccessRecord
from .call import Call, Cost
from .limiter import Limiter
from .limits import CONTENT_OPERATIONS, estimate_tokens, needed_tokens, tokens_of
from .routing import Endpoint, Request, Route
from .stored_usage import BackgroundRun, ContextSizes


def token_cost(request: Request, planned: Route, contexts: ContextSizes) -> Cost:
    """A call's cost, before it goes: a model call's estimate (with the stored context it
    continues), a resource call's content, or nothing for reading, cancelling, deleting."""
    body = planned.body
    if (resource := request.resource) is not None:
        operation = resource.operation
        if (operation.method, operation.template) not in CONTENT_OPERATIONS:
            return Cost(spends=False)
        tokens = tokens_of(len(body))
        items_of = resource.owner_id if operation.template == "conversations/{id}/items" else None
        return Cost(reserve=tokens, needed=max(tokens, 1), stored=items_of)
    document = safejson.object_or_none(body) or {}
    if planned.endpoint is not Endpoint.RESPONSES:  # chat: no stored state
        return Cost(reserve=estimate_tokens(len(body), document), needed=needed_tokens(document))
    stored = contexts.of([value for _, value in planned.stored.followups])
    return Cost(
        reserve=estimate_tokens(len(body), document, stored),
        needed=needed_tokens(document, stored),
        background=document.get("background") is True,
        conversation=planned.stored.conversation,
    )


def charged_tokens(entry: AccessRecord) -> int | None:
    """The tokens a finished call counts against its key's budgets: Oracle's usage; none for an
    error answer (Oracle charges none); None when unknown (a client that left mid-stream, a
    background response), so that the reservation's estimate stands."""
    if entry.tokens_in is not None or entry.tokens_out is not None:
        return (entry.tokens_in or 0) + (entry.tokens_out or 0)
    if entry.status >= 400:
        return 0
    return None


def account(call: Call, entry: AccessRecord, limiter: Limiter) -> bool:
    """A finished call's tokens: its usage settles its reservation; what it added to stored
    state is remembered (stored_usage.ContextSizes); a background run is kept until a later call
    (a poll, a resumed stream, a cancel) sees it finished, and that call's ledger row carries
    the run's usage, once. False when the record's tokens are no new use (a stored response
    read again): its ledger row then carries none."""
    request = call.request
    if request is None:
        return True
    if call.route is None:  # refused after admission (a stored id not its own): nothing used
        if call.reservation:
            limiter.settle(call.reservation, 0)
        return True
    if request.resource is not None and request.resource.operation.family == "responses/{id}":
        return settle_background(call, entry, limiter)
    reservation = call.reservation
    if reservation is None:
        return True
    used = charged_tokens(entry)
    if used is not None:
        limiter.settle(reservation, used)
    if not 200 <= call.status < 300:
        return True
    cost, contexts = call.cost, limiter.contexts
    charge = reservation.tokens if used is None else used
    if request.resource is not None:
        if cost.stored:
            contexts.add(cost.stored, charge)
        elif request.resource.operation.template == "conversations":
            made = (safejson.object_or_none(call.response_body) or {}).get("id")
            if isinstance(made, str):
                contexts.set(made, charge)
        return True
    if request.endpoint is not Endpoint.RESPONSES:
        return True
    made = call.stream.response_id if call.stream else None
    if made is None:
        made = (safejson.object_or_none(call.response_body) or {}).get("id")
    if not isinstance(made, str):
        return True
    contexts.set(made, charge)  # what a call continuing it makes Oracle read
    if cost.conversation:
        contexts.set(cost.conversation, charge)
    if cost.background and used is None:
        model = entry.model
        limiter.background.started(made, BackgroundRun(reservation, model, cost.conversation))
    return True


def settle_background(call: Call, entry: AccessRecord, limiter: Limiter) -> bool:
    """A call on a stored response (GET, a resumed stream, cancel, DELETE) that finds a
    background run finished, with its usage: the run's reservation is settled with it, and this
    call's record carries it (under the run's model). True when it did."""
    resource = call.request.resource if call.request else None
    if resource is None or resource.owner_id is None or not 200 <= call.status < 300:
        return False
    response_id = resource.owner_id
    if resource.operation.method == "DELETE":  # gone: its estimate stands
        limiter.background.forget(response_id)
        return False
    if call.stream is not None:
        status = "completed" if call.stream.done else None
    else:
        status = (safejson.object_or_none(call.response_body) or {}).get("status")
    used = charged_tokens(entry) if entry.tokens_in is not None else None
    run = limiter.background.finished(response_id, status, used is not None)
    if run is None or used is None:
        return False
    limiter.settle(run.reservation, used)
    limiter.contexts.set(response_id, used)
    if run.conversation:  # the estimate it added becomes what Oracle counted
        limiter.contexts.add(run.conversation, used - run.reservation.tokens)
    entry.model = run.model
    return True
