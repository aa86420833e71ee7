"""Per-client fault rules for the local stack's AWS: which calls of one client fail, and how.

A client names itself with the AWS SDKs' application id (`AWS_SDK_UA_APP_ID`), which every SDK
sends as `app/<id>` in its User-Agent headers. hack/stack/moto_server.py reads that client's
rules from the SSM parameter /windlass-test/faults/<id>, so a test's faults reach only the
process it started with that id, and concurrent tests do not see each other's.

The rules are comma-separated `<operation>=<kind>[*<count>]` entries, tried in order:
- operation: an API operation's name (`CreateFleet`, `GetQueueAttributes`), or `*` for any;
- kind: `throttle` (the service's throttling error), `error500` (an internal error, HTTP 500),
  `slow<ms>` (served normally after that many milliseconds), `drop` (the connection closed
  without an answer, the call not served) or `lost` (the call served, then the connection
  closed without the answer: it took effect and the client cannot know);
- count: how many matching calls it fails; without one, every matching call.
A rule whose count is spent lets a later rule for the same call apply, so
`CreateFleet=throttle*2,CreateFleet=error500*1` throttles two calls, then fails the third.
Writing the parameter again starts its counts afresh.

What was injected is counted per operation and kind, for the client's whole life, and written
in the same form (`CreateFleet=throttle*2,CreateFleet=error500*1`) to
/windlass-test/faults-injected/<id>.
"""

import json
import re
import threading
from dataclasses import dataclass

RULES = "/windlass-test/faults"
INJECTED = "/windlass-test/faults-injected"

_ENTRY = re.compile(r"^(?P<operation>\*|[A-Za-z0-9]+)=(?P<kind>throttle|error500|drop|lost|slow(?P<delay>[0-9]+))(?:\*(?P<count>[0-9]+))?$")
_APP_ID = re.compile(r"(?:^|\s)app/(\S+)")


@dataclass(frozen=True)
class Rule:
    operation: str
    # `throttle`, `error500`, `slow`, `drop` or `lost`.
    kind: str
    delay_ms: int = 0
    # How many matching calls fail; None: every one.
    count: int | None = None

    def matches(self, operation):
        return self.operation in ("*", operation)

    def label(self):
        """The kind as the rules write it: `slow2000` for a delay."""
        return f"slow{self.delay_ms}" if self.kind == "slow" else self.kind


def parse_rules(text):
    """The rules `text` holds, in order; ValueError naming the first entry that is not one."""
    rules = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        found = _ENTRY.match(entry)
        if found is None:
            raise ValueError(f"not a fault rule: {entry!r} (expected <operation>=<kind>[*<count>])")
        kind = found["kind"]
        delay = int(found["delay"]) if found["delay"] is not None else 0
        count = int(found["count"]) if found["count"] is not None else None
        rules.append(Rule(found["operation"], "slow" if kind.startswith("slow") else kind, delay, count))
    return rules


def app_id(*user_agents):
    """The application id the first User-Agent header naming one carries (`app/<id>`), or None."""
    for header in user_agents:
        found = _APP_ID.search(header or "")
        if found:
            return found[1]
    return None


class _ClientRules:
    def __init__(self, version, rules):
        self.version = version
        self.rules = rules
        self.left = [rule.count for rule in rules]


class FaultBook:
    """Every client's rules as last read, what is left of their counts, and what was injected.
    Shared by the server's request threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rules = {}
        self._injected = {}

    def fault_for(self, client, version, text, operation, publish=lambda injected: None):
        """The rule that fails this call of `client`, whose rules parameter is at `version` and
        holds `text`, or None if no rule applies. An injected fault is counted, and `publish`
        is given the client's new counts (as `injected` words them) before any other call is
        decided, so that what it writes never goes back. Rules that do not parse raise
        ValueError, and each call raises it again until they are rewritten."""
        with self._lock:
            current = self._rules.get(client)
            if current is None or current.version != version:
                current = _ClientRules(version, parse_rules(text))
                self._rules[client] = current
            for index, rule in enumerate(current.rules):
                left = current.left[index]
                if not rule.matches(operation) or left == 0:
                    continue
                if left is not None:
                    current.left[index] = left - 1
                injected = self._injected.setdefault(client, {})
                key = f"{operation}={rule.label()}"
                injected[key] = injected.get(key, 0) + 1
                publish(self._injected_text(client))
                return rule
            return None

    def injected(self, client):
        """What was injected into `client`'s calls, as `<operation>=<kind>*<count>` entries."""
        with self._lock:
            return self._injected_text(client)

    def _injected_text(self, client):
        counts = self._injected.get(client, {})
        return ",".join(f"{key}*{count}" for key, count in sorted(counts.items()))


# The protocol each service the stack serves answers in; any other is JSON 1.1.
PROTOCOLS = {"ec2": "ec2", "iam": "query", "sts": "query", "sqs": "json1.0", "eks": "rest-json"}


def error_answer(service, kind, request_id):
    """A failed call's (status, headers, body): the fault `kind` (`throttle`, else an internal
    error) as `service` (moto's name: `ec2`, `sqs`) words it. Written out here rather than by
    moto's serializer, which LocalStack's fork of moto does not have."""
    protocol = PROTOCOLS.get(service, "json1.1")
    if kind == "throttle" and service == "ec2":
        code, status, message = "RequestLimitExceeded", 503, "Request limit exceeded."
    elif kind == "throttle" and service == "sqs":
        code, status, message = "RequestThrottled", 400, "The request was denied due to request throttling."
    elif kind == "throttle":
        code, status, message = "Throttling" if protocol == "query" else "ThrottlingException", 400, "Rate exceeded"
    else:
        code = "InternalError" if protocol in ("ec2", "query") else "InternalFailure"
        status, message = 500, "We encountered an internal error. Please try again."
    if protocol == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
                f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
        return status, {"Content-Type": "text/xml"}, body
    fault = "Sender" if status < 500 else "Receiver"
    if protocol == "query":
        body = (f"<ErrorResponse><Error><Type>{fault}</Type><Code>{code}</Code><Message>{message}</Message>"
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>")
        return status, {"Content-Type": "text/xml"}, body
    headers = {"x-amzn-RequestId": request_id, "x-amzn-ErrorType": code}
    if protocol == "rest-json":
        headers["Content-Type"] = "application/json"
    else:
        headers["Content-Type"] = f"application/x-amz-json-{protocol.removeprefix('json')}"
    if service == "sqs":
        # SQS answers JSON in the words of its older query protocol too.
        headers["x-amzn-query-error"] = f"{code};{fault}"
    return status, headers, json.dumps({"__type": code, "message": message})
