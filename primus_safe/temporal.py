"""The Temporal client and the search attributes every workflow may carry."""

from __future__ import annotations

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from primus_safe.settings import Settings
from workflows.common import SEARCH_ATTRIBUTE_NAMES

log = logging.getLogger(__name__)


async def connect(settings: Settings) -> Client:
    """A client for the configured server and namespace, converting pydantic models."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register the Keyword search attributes the workflows set (idempotent)."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for name in SEARCH_ATTRIBUTE_NAMES
        if name not in existing.custom_attributes
    }
    if missing:
        log.info("registering search attributes %s", sorted(missing))
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
