"""Sends metrics, distributions, an event and a service check with
Datadog's older Python library (`datadog`, PyPI: datadogpy), its `api`
module and its ThreadStats, unchanged: only the host (the relay) and the
API key (the tenant id) differ from sending to Datadog. Used by
tests/python_client.rs. Each call's answer is printed and checked: the
library returns None for a request it could not parse an answer from."""

import os
import sys
import time

from datadog import ThreadStats, api, initialize

relay = os.environ["RELAY_URL"]
tenant = os.environ["TENANT"]
initialize(api_key=tenant, api_host=relay)
now = int(time.time())


def expect(what, answer, want):
    print(what, answer)
    if answer != want:
        print(f"{what}: expected {want!r}, got {answer!r}")
        sys.exit(1)


expect("validate", api.api_client.APIClient.submit("GET", "validate"), {"valid": True})
expect("metric", api.Metric.send(metric="legacy.gauge", points=[(now, 3.0)], tags=["client:datadogpy"]), {"status": "ok"})
expect(
    "distribution",
    api.Distribution.send(distributions=[{"metric": "legacy.latency", "points": [(now, [1.0, 2.0, 3.0])], "tags": ["client:datadogpy"]}]),
    {"status": "ok"},
)
event = api.Event.create(title="legacy event", text="sent through ddrelay", tags=["client:datadogpy"])
expect("event", event.get("status"), "ok")
expect("service check", api.ServiceCheck.check(check="legacy.ok", host_name="h", status=0, tags=["client:datadogpy"]), {"status": "ok"})

stats = ThreadStats()
stats.start(flush_in_thread=False)
stats.distribution("legacy.threadstats.latency", 5.0, tags=["client:threadstats"])
stats.distribution("legacy.threadstats.latency", 7.0, tags=["client:threadstats"])
stats.gauge("legacy.threadstats.gauge", 1.0, tags=["client:threadstats"])
stats.flush(time.time() + 60)
print("legacy client done")
