"""Node templates and the addon catalogue they draw from."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from api.schemas.common import RequestModel, ResponseModel
from domain.addon_catalogue import unknown_addons
from domain.names import dns1123_error, normalize_name

AddonName = Annotated[str, StringConstraints(min_length=1, max_length=63)]
TemplateName = Annotated[str, StringConstraints(max_length=253)]


def _addons(names: list[str]) -> list[str]:
    unknown = unknown_addons(names)
    if unknown:
        raise ValueError(f"unknown addons: {', '.join(unknown)} (see GET /api/v1/addontemplates)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"addons listed more than once: {', '.join(repeated)}")
    return names


class CreateNodeTemplateRequest(RequestModel):
    """A template: its id (`templateId`, or upstream's `name`) and the addons to install, in order."""

    template_id: TemplateName | None = Field(default=None, examples=["node-template-v1"])
    name: TemplateName | None = Field(default=None, description="Upstream's spelling of templateId")
    add_on_templates: Annotated[list[AddonName], Field(max_length=100), AfterValidator(_addons)] = Field(
        examples=[["disable-os-upgrade", "enable-cpu-performance", "sysctl-inotify"]]
    )

    @model_validator(mode="after")
    def _one_id(self) -> Self:
        if (self.template_id is None) == (self.name is None):
            raise ValueError("give exactly one of templateId or name")
        problem = dns1123_error(self.template_id_normalized)
        if problem:
            raise ValueError(f"templateId (normalized) {problem}")
        return self

    @property
    def template_id_normalized(self) -> str:
        """The template's id: the normalized templateId or name."""
        return normalize_name(self.template_id if self.template_id is not None else self.name or "")


class CreateNodeTemplateResponse(ResponseModel):
    """The new template's id."""

    id: str


class NodeTemplateView(ResponseModel):
    """A template and its addons, in install order."""

    template_id: str
    add_on_templates: list[str]


class AddonTemplateView(ResponseModel):
    """An addon from the shipped catalogue; gpuChip is "" when it applies to any node. The fields
    upstream's console reads are there too: `addonTemplateId` (the name), `type` (every shipped
    addon is a `script`), `version` (of the script's text), `category` (`gpu` or `system`)."""

    addon_template_id: str
    name: str
    description: str
    gpu_chip: str
    type: str
    version: str
    category: str
    creation_time: str
