"""Datadog's tracing library for Python (ddtrace), configured only by its
environment as a partner's service would be: DD_TRACE_AGENT_URL points at
the relay, DD_TAGS=ddrelay.tenant:<id> names the tenant. Creates two
traces (one with a child of another service, one with an error), flushes,
and exits."""

from ddtrace.trace import tracer

with tracer.trace("web.request", service="checkout", resource="GET /cart") as root:
    root.set_tag("http.status_code", "200")
    with tracer.trace("db.query", service="checkout-db", resource="SELECT cart"):
        pass

try:
    with tracer.trace("web.request", service="checkout", resource="POST /pay"):
        raise ValueError("card declined")
except ValueError:
    pass

tracer.flush()
tracer.shutdown()
print("sent")
