"""Bodies of the log module (`getWorkloadLogs`, `getWorkloadLogContext`, `getServiceLogs`): the
query upstream sends to OpenSearch, and the OpenSearch-shaped answer."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.common import RequestModel, ShortText

Count = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class LogQueryBody(RequestModel):
    """`since`/`until` as `2006-01-02T15:04:05[.000]Z`; `podNames`/`nodeNames` comma-separated.
    In a context query `limit` is the number of lines on each side (default 10)."""

    since: ShortText = ""
    until: ShortText = ""
    offset: Count = 0
    limit: Count = 0
    order: ShortText = ""
    keywords: Annotated[list[str], Field(max_length=64)] = []
    pod_names: Annotated[str, Field(max_length=16384)] = ""
    dispatch_count: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    node_names: Annotated[str, Field(max_length=16384)] = ""


class _View(BaseModel):
    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)


class KubernetesView(_View):
    pod_name: str = ""
    host: str = ""
    container_name: str = ""
    labels: dict[str, str] = {}


class SourceView(_View):
    timestamp: str = Field(alias="@timestamp", examples=["2024-02-27T07:45:08.221Z"])
    stream: str = "stdout"
    message: str
    level: str | None = Field(default=None, description="service logs only")
    kubernetes: KubernetesView


class HitView(_View):
    id: str = Field(alias="_id", description="the line's id (use it for the context query)")
    source: SourceView = Field(alias="_source")
    line: int | None = Field(
        default=None, description="context only: position relative to the line asked for (0)"
    )


class TotalView(_View):
    value: int
    relation: str = Field(default="eq", description="`gte` when the count stopped at 10,000")


class HitsView(_View):
    total: TotalView
    hits: list[HitView]


class LogSearchResponse(_View):
    took: int = Field(description="query time in ms")
    hits: HitsView
