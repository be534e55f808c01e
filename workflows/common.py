"""Search attributes and retry policies shared by every workflow."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy, SearchAttributeKey

RESOURCE_TYPE = SearchAttributeKey.for_keyword("PrimusResourceType")
RESOURCE_ID = SearchAttributeKey.for_keyword("PrimusResourceId")
PHASE = SearchAttributeKey.for_keyword("PrimusPhase")
USER = SearchAttributeKey.for_keyword("PrimusUser")
WORKSPACE = SearchAttributeKey.for_keyword("PrimusWorkspace")
CLUSTER = SearchAttributeKey.for_keyword("PrimusCluster")

SEARCH_ATTRIBUTE_NAMES = [k.name for k in (RESOURCE_TYPE, RESOURCE_ID, PHASE, USER, WORKSPACE, CLUSTER)]

NON_RETRYABLE = ["NotFound", "Invalid", "AuthenticationFailed"]

DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=NON_RETRYABLE,
)
"""For short database activities: transient failures retry, bad input does not."""
