"""The channel's control API: impairments as typed, named resources (Toxiproxy's toxics).

Each direction of the link (``tx_to_rx``, ``rx_to_tx``) is, like a Toxiproxy stream, an ordered
set of impairments addressed by NAME, unique within the direction (by default the impairment's
type, so ``tx_to_rx/loss`` is the loss of the forward direction). Every impairment is a pydantic
model in the OpenAPI schema: a discriminated union on ``type`` whose ``attributes`` are that
impairment's own ``Attributes`` (channel/impairments/), shared ones (``toxicity``, ``types``,
``seq_range``) included.

==========================================  =====================================================
``GET    /impairments``                     every impairment, both directions, pipeline order
``DELETE /impairments``                     remove them all (204)
``GET    /impairments/schemas``             JSON schema of each type's attributes (the dashboard)
``GET    /impairments/{direction}``         the impairments of one direction
``POST   /impairments/{direction}``         add one (201; 409 if the name is taken)
``GET    /impairments/{direction}/{name}``  one (404 if absent)
``PATCH  /impairments/{direction}/{name}``  update some attributes (merged; 404 if absent)
``DELETE /impairments/{direction}/{name}``  remove it (204; 404 if absent)
``PUT    /impairments/{direction}/{type}``  deprecated: add or merge the impairment named by
                                            its type (the API before names; kept for scripts)
==========================================  =====================================================

Requests that change state need ``Authorization: Bearer <HOPLINK_CONTROL_TOKEN>`` when the
channel has a token (401 otherwise) and a same-origin caller (403); an attribute the impairment
refuses once merged answers 400 naming it; a body that does not match the schema answers 422.
Changes apply to every open link at once, and to links opened later.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model

from channel.impairments import IMPAIRMENTS, impairment_schemas
from shared.protocol.security import require_control_token
from shared.service import get_service

Direction = Literal["tx_to_rx", "rx_to_tx"]
DIRECTION_ORDER: tuple[str, ...] = ("tx_to_rx", "rx_to_tx")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
Name = Annotated[
    str,
    Field(
        pattern=NAME_PATTERN,
        description="unique within its direction: letters, digits, '_', '.', '-' (<= 64)",
    ),
]


class ErrorDetail(BaseModel):
    """What a refused request gets: a message that names the field, name or fix at fault."""

    detail: str


def _title(kind: str) -> str:
    return "".join(part.capitalize() for part in kind.split("_"))


def _partial(kind: str, attributes: type[BaseModel]) -> type[BaseModel]:
    """``attributes`` with every field optional and unset by default (a PATCH body)."""
    fields: dict[str, Any] = {}
    for name, field in attributes.model_fields.items():
        annotation = (
            Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        )
        fields[name] = (Optional[annotation], Field(None, description=field.description))  # noqa: UP045
    config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    return create_model(f"{_title(kind)}Patch", __config__=config, **fields)


def _models() -> tuple[Any, Any, Any]:
    """(new, view, patch) unions over every impairment type, built from the registry."""
    new, view, patch = [], [], []
    for kind, cls in IMPAIRMENTS.items():
        title, attributes = _title(kind), cls.Attributes
        literal = Literal[kind]  # type: ignore[valid-type]
        new.append(
            create_model(
                f"New{title}",
                __config__=ConfigDict(extra="forbid"),
                __doc__=f"Add a {kind} impairment.",
                type=(literal, ...),
                name=(Optional[Name], Field(None, description="default: the type")),  # noqa: UP045
                attributes=(attributes, Field(default_factory=attributes)),
            )
        )
        view.append(
            create_model(
                f"{title}Impairment",
                __doc__=f"A {kind} impairment as it runs: attributes and what it did.",
                type=(literal, ...),
                name=(str, ...),
                direction=(Direction, ...),
                attributes=(attributes, ...),
                counters=(dict[str, int], Field(description="what it did, summed over links")),
                derived=(
                    dict[str, Any],
                    Field(default_factory=dict, description="figures derived from attributes"),
                ),
            )
        )
        patch.append(_partial(kind, attributes))
    return (
        Annotated[Union[tuple(new)], Field(discriminator="type")],  # noqa: UP007
        Annotated[Union[tuple(view)], Field(discriminator="type")],  # noqa: UP007
        Union[tuple(patch)],  # noqa: UP007
    )


NewImpairment, ImpairmentView, AttributesPatch = _models()


class ImpairmentUpdate(BaseModel):
    """Attributes to change; the others keep their values (validated once merged)."""

    model_config = ConfigDict(extra="forbid")

    attributes: AttributesPatch  # type: ignore[valid-type]


# --- the service side ----------------------------------------------------------------------------


def views(service: Any, direction: str | None = None) -> list[Any]:
    """The impairments set (of ``direction``, or all) as typed views, in pipeline order."""
    states = service.impairments()
    types = service.template.impairment_types()
    out = []
    for d in DIRECTION_ORDER if direction is None else (direction,):
        for name, kind in types[d].items():
            out.append(_view(d, name, kind, states[d][name]))
    return out


def _view(direction: str, name: str, kind: str, state: dict[str, Any]) -> Any:
    fields = IMPAIRMENTS[kind].Attributes.model_fields
    return {
        "type": kind,
        "name": name,
        "direction": direction,
        "attributes": {k: v for k, v in state.items() if k in fields},
        "counters": state["counters"],
        "derived": {k: v for k, v in state.items() if k not in fields and k != "counters"},
    }


def find(service: Any, direction: str, name: str) -> Any:
    kind = service.template.impairment_types()[direction].get(name)
    if kind is None:
        raise HTTPException(404, f"no impairment named {name!r} on {direction}")
    return _view(direction, name, kind, service.impairments()[direction][name])


# --- routes --------------------------------------------------------------------------------------

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="controlToken",
    description="HOPLINK_CONTROL_TOKEN; required by requests that change state when the "
    "channel has one (always when it listens beyond loopback)",
)
WRITE = [Security(bearer)]  # documents the scheme; require_control_token enforces it
REFUSED = {
    401: {"model": ErrorDetail, "description": "the channel's control token is missing or wrong"},
    403: {"model": ErrorDetail, "description": "a cross-origin request that changes state"},
}
INVALID = {400: {"model": ErrorDetail, "description": "an attribute the impairment refuses"}}
ABSENT = {404: {"model": ErrorDetail, "description": "no impairment of that name there"}}
TAKEN = {409: {"model": ErrorDetail, "description": "the name is taken in that direction"}}

router = APIRouter(tags=["impairments"], dependencies=[Depends(require_control_token)])


@router.get("/impairments", response_model=list[ImpairmentView])
async def list_impairments(request: Request) -> list[Any]:
    """Every impairment, both directions, in pipeline order, with its attributes and counters
    (summed over the links that ran under it)."""
    return views(get_service(request))


@router.delete("/impairments", status_code=204, dependencies=WRITE, responses=REFUSED)
async def remove_all_impairments(request: Request) -> Response:
    """Remove every impairment of both directions."""
    get_service(request).clear_all()
    return Response(status_code=204)


@router.get("/impairments/schemas")
async def impairment_types() -> dict[str, dict[str, Any]]:
    """JSON schema of every impairment type's attributes, in pipeline order (the dashboard
    builds its controls from these)."""
    return impairment_schemas()


@router.get("/impairments/{direction}", response_model=list[ImpairmentView])
async def list_direction(request: Request, direction: Direction) -> list[Any]:
    """The impairments of one direction, in pipeline order."""
    return views(get_service(request), direction)


@router.post(
    "/impairments/{direction}",
    response_model=ImpairmentView,
    status_code=201,
    dependencies=WRITE,
    responses={**INVALID, **REFUSED, **TAKEN},
)
async def add_impairment(
    request: Request,
    direction: Direction,
    impairment: Annotated[NewImpairment, Body()],  # type: ignore[valid-type]
) -> Any:
    """Add an impairment to a direction (at its type's place in the pipeline)."""
    service = get_service(request)
    name = impairment.name or impairment.type
    if name in service.template.impairment_types()[direction]:
        raise HTTPException(409, f"{direction} already has an impairment named {name!r}")
    attributes = impairment.attributes.model_dump(exclude_unset=True)
    service.set_impairment(direction, name, attributes, kind=impairment.type)
    return find(service, direction, name)


@router.get("/impairments/{direction}/{name}", response_model=ImpairmentView, responses={**ABSENT})
async def get_impairment(request: Request, direction: Direction, name: Name) -> Any:
    """One impairment: its attributes and counters."""
    return find(get_service(request), direction, name)


@router.patch(
    "/impairments/{direction}/{name}",
    response_model=ImpairmentView,
    dependencies=WRITE,
    responses={**INVALID, **REFUSED, **ABSENT},
)
async def update_impairment(
    request: Request, direction: Direction, name: Name, update: ImpairmentUpdate
) -> Any:
    """Change some attributes of an impairment; its counters and state are kept (what it
    holds is rescheduled under the new attributes)."""
    service = get_service(request)
    find(service, direction, name)
    service.set_impairment(direction, name, update.attributes.model_dump(exclude_unset=True))
    return find(service, direction, name)


@router.delete(
    "/impairments/{direction}/{name}",
    status_code=204,
    dependencies=WRITE,
    responses={**REFUSED, **ABSENT},
)
async def remove_impairment(request: Request, direction: Direction, name: Name) -> Response:
    """Remove an impairment; what it held goes on through the rest of the pipeline."""
    service = get_service(request)
    find(service, direction, name)
    service.clear_impairment(direction, name)
    return Response(status_code=204)


@router.put(
    "/impairments/{direction}/{name}",
    response_model=ImpairmentView,
    dependencies=WRITE,
    responses={**INVALID, **REFUSED},
    deprecated=True,
)
async def put_impairment(
    request: Request,
    direction: Direction,
    name: Name,
    attributes: Annotated[dict[str, Any], Body(default_factory=dict)],
) -> Any:
    """The API before names: add the impairment of type ``name``, or merge ``attributes``
    into it. Use POST (add) and PATCH (update) instead."""
    service = get_service(request)
    if name not in service.template.impairment_types()[direction] and name not in IMPAIRMENTS:
        raise HTTPException(
            400, f"unknown impairment type {name!r}; known: {list(IMPAIRMENTS)} (or POST a name)"
        )
    service.set_impairment(direction, name, attributes)
    return find(service, direction, name)


__all__ = [
    "AttributesPatch",
    "ErrorDetail",
    "ImpairmentUpdate",
    "ImpairmentView",
    "NewImpairment",
    "router",
    "views",
]
