"""Sends every data kind to a ddrelay with Datadog's official Python client,
unchanged: only the host (the relay) and the API key (the tenant id) differ
from sending to Datadog itself. Used by tests/python_client.rs."""

import os
import sys
import time

from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v1.api.events_api import EventsApi
from datadog_api_client.v1.api.metrics_api import MetricsApi as MetricsApiV1
from datadog_api_client.v1.api.service_checks_api import ServiceChecksApi
from datadog_api_client.v1.model.distribution_point import DistributionPoint
from datadog_api_client.v1.model.distribution_points_payload import DistributionPointsPayload
from datadog_api_client.v1.model.distribution_points_series import DistributionPointsSeries
from datadog_api_client.v1.model.event_create_request import EventCreateRequest
from datadog_api_client.v1.model.metrics_payload import MetricsPayload
from datadog_api_client.v1.model.point import Point
from datadog_api_client.v1.model.series import Series
from datadog_api_client.v1.model.service_check import ServiceCheck
from datadog_api_client.v1.model.service_check_status import ServiceCheckStatus
from datadog_api_client.v1.model.service_checks import ServiceChecks
from datadog_api_client.v2.api.events_api import EventsApi as EventsApiV2
from datadog_api_client.v2.api.logs_api import LogsApi
from datadog_api_client.v2.model.change_event_custom_attributes import ChangeEventCustomAttributes
from datadog_api_client.v2.model.change_event_custom_attributes_changed_resource import ChangeEventCustomAttributesChangedResource
from datadog_api_client.v2.model.change_event_custom_attributes_changed_resource_type import ChangeEventCustomAttributesChangedResourceType
from datadog_api_client.v2.model.event_category import EventCategory
from datadog_api_client.v2.model.event_create_request import EventCreateRequest as EventCreateRequestV2
from datadog_api_client.v2.model.event_create_request_payload import EventCreateRequestPayload
from datadog_api_client.v2.model.event_create_request_type import EventCreateRequestType
from datadog_api_client.v2.model.event_payload import EventPayload
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.content_encoding import ContentEncoding
from datadog_api_client.v2.model.http_log import HTTPLog
from datadog_api_client.v2.model.http_log_item import HTTPLogItem
from datadog_api_client.v2.model.metric_content_encoding import MetricContentEncoding
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_resource import MetricResource
from datadog_api_client.v2.model.metric_series import MetricSeries

relay = os.environ["RELAY_URL"]
tenant = os.environ["TENANT"]

configuration = Configuration(host=relay)
configuration.api_key["apiKeyAuth"] = tenant
now = int(time.time())

with ApiClient(configuration) as api_client:
    for encoding in (MetricContentEncoding.GZIP, MetricContentEncoding.DEFLATE):
        r = MetricsApi(api_client).submit_metrics(
            content_encoding=encoding,
            body=MetricPayload(
                series=[
                    MetricSeries(
                        metric="python.client.gauge",
                        type=MetricIntakeType.GAUGE,
                        points=[MetricPoint(timestamp=now, value=0.7)],
                        resources=[MetricResource(name="py-host", type="host")],
                        tags=["client:python", f"encoding:{encoding}"],
                    )
                ]
            ),
        )
        print("series v2", encoding, r)

    r = MetricsApiV1(api_client).submit_metrics(
        body=MetricsPayload(series=[Series(metric="python.client.v1", type="gauge", points=[Point([float(now), 1.1])], tags=["client:python"])])
    )
    print("series v1", r)

    for encoding in (ContentEncoding.GZIP, ContentEncoding.DEFLATE):
        r = LogsApi(api_client).submit_log(
            content_encoding=encoding,
            body=HTTPLog(
                [
                    HTTPLogItem(ddsource="python", ddtags="client:python", hostname="py-host", message="hello from the official client", service="py"),
                    HTTPLogItem(ddsource="python", ddtags="client:python", hostname="py-host", message="second line", service="py"),
                ]
            ),
        )
        print("logs", encoding, r)

    r = EventsApi(api_client).create_event(
        body=EventCreateRequest(title="python client event", text="sent through ddrelay", tags=["client:python"])
    )
    print("event", r)

    r = ServiceChecksApi(api_client).submit_service_check(
        body=ServiceChecks(
            [ServiceCheck(check="python.client.ok", host_name="py-host", status=ServiceCheckStatus.OK, tags=["client:python"], timestamp=now)]
        )
    )
    print("service check", r)

    r = MetricsApiV1(api_client).submit_distribution_points(
        body=DistributionPointsPayload(
            series=[DistributionPointsSeries(metric="python.client.latency", points=[DistributionPoint([float(now), [1.0, 2.5, 4.0]])], tags=["client:python"])]
        )
    )
    print("distribution points", r)

    r = EventsApiV2(api_client).create_event(
        body=EventCreateRequestPayload(
            data=EventCreateRequestV2(
                type=EventCreateRequestType.EVENT,
                attributes=EventPayload(
                    title="python client change",
                    category=EventCategory.CHANGE,
                    message="sent through ddrelay",
                    tags=["client:python"],
                    attributes=ChangeEventCustomAttributes(
                        changed_resource=ChangeEventCustomAttributesChangedResource(
                            name="fast_checkout", type=ChangeEventCustomAttributesChangedResourceType.FEATURE_FLAG
                        )
                    ),
                ),
            )
        )
    )
    print("event v2", r)

print("all kinds sent")
sys.exit(0)
