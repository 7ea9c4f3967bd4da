"""Send each data kind to a ddrelay with Datadog's official Python client.

Nothing changes in your Datadog code except two settings: the client's host
is the relay, and its API key is the tenant id (your customer's account id,
as connected). The relay forwards the data to that customer's own Datadog
site with the customer's own API key.

Install Datadog's client (PyPI: datadog-api-client), then run:

    python3 -m venv .venv && .venv/bin/pip install 'datadog-api-client==2.*'
    RELAY_URL=http://127.0.0.1:8126 RELAY_TENANT=demo-customer .venv/bin/python examples/send_data.py
"""

import os
import time

from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.api.service_checks_api import ServiceChecksApi
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from datadog_api_client.v1.model.service_check import ServiceCheck
from datadog_api_client.v1.model.service_check_status import ServiceCheckStatus
from datadog_api_client.v1.model.service_checks import ServiceChecks
from datadog_api_client.v2.api.logs_api import LogsApi
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.content_encoding import ContentEncoding
from datadog_api_client.v2.model.http_log import HTTPLog
from datadog_api_client.v2.model.http_log_item import HTTPLogItem
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_series import MetricSeries

RELAY = os.environ.get("RELAY_URL", "http://127.0.0.1:8126")
TENANT = os.environ.get("RELAY_TENANT", "demo-customer")

configuration = Configuration(host=RELAY)  # every API, logs included, goes to the relay
configuration.api_key["apiKeyAuth"] = TENANT  # the tenant id, not a Datadog key
configuration.request_timeout = 30

now = int(time.time())
tags = ["env:demo", "service:checkout"]

with ApiClient(configuration) as client:
    # Metrics v2 (the client compresses series with zstd1 or deflate as it likes).
    MetricsApi(client).submit_metrics(
        body=MetricPayload(
            series=[
                MetricSeries(
                    metric="checkout.orders",
                    type=MetricIntakeType.COUNT,
                    points=[MetricPoint(timestamp=now, value=3.0)],
                    tags=tags,
                )
            ]
        )
    )
    print("series: accepted")

    # Logs, gzip-compressed.
    LogsApi(client).submit_log(
        body=HTTPLog(
            [
                HTTPLogItem(
                    message="order 1234 paid",
                    service="checkout",
                    ddsource="partner-app",
                    ddtags="env:demo",
                )
            ]
        ),
        content_encoding=ContentEncoding.GZIP,
    )
    print("logs: accepted")

    EventsApi(client).create_event(
        body=EventCreateRequest(
            title="Deployed checkout v42",
            text="Rolled out to all regions",
            tags=tags,
        )
    )
    print("event: accepted")

    ServiceChecksApi(client).submit_service_check(
        body=ServiceChecks(
            [
                ServiceCheck(
                    check="checkout.can_connect",
                    host_name="checkout-1",
                    status=ServiceCheckStatus.OK,
                    timestamp=now,
                    tags=tags,
                )
            ]
        )
    )
    print("service check: accepted")
# Any refusal raises datadog_api_client.exceptions.ApiException (status, body):
# 409 means the tenant is not connected; 429/503 mean back off and retry.
