"""Bodies of the groups route: a layer's units factorised into groups that act together."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..inference.schemas import TEXT_EXAMPLE
from ..web.schemas import StrictBody, limit


class GroupsRequest(StrictBody):
    """Factorise one layer's quantity into K groups of units (non-negative matrix factorisation)."""

    layer: int = Field(ge=0, description="The layer whose units are grouped.")
    quantity: str = Field("h", min_length=1, max_length=8, description="h, c or a gate.")
    components: Annotated[int, limit("max_groups_components")] = Field(
        8, ge=1, description="K, the number of groups; at most max_groups_components "
                             "(RNNSCOPE_MAX_GROUPS_COMPONENTS) and the layer's units.")
    text: Annotated[str, Field(min_length=1), limit("max_text_chars")] | None = Field(
        None, description="The passage to return the groups' tracks over (the explorer's text); default the "
                          "first `shown` characters of the validation text. When the model's training corpus is "
                          "not on this server the groups are fitted on this text too. At most max_text_chars "
                          "(RNNSCOPE_MAX_TEXT_CHARS).", examples=[TEXT_EXAMPLE])
    drop_unknown: bool = False
    shown: Annotated[int, limit("max_text_chars")] = Field(
        1000, ge=1, description="Without a text: the validation characters the tracks are returned over.")
    top: int = Field(8, ge=1, le=64, description="Heaviest units listed per group.")


class GroupUnit(BaseModel):
    unit: int
    weight: float = Field(description="The unit's weight in the group, the heaviest 1.")


class Group(BaseModel):
    index: int = Field(description="Heaviest group first: by the size of its part of the factorisation.")
    share: float = Field(description="||w_k||^2 ||g_k||^2 of this group's rank-one piece over the sum of all.")
    units: list[GroupUnit] = Field(description="The heaviest units, heaviest first.")
    track: list[float] = Field(description="The group's weight at each character of the passage shown: "
                                           "non-negative, in the units of its heaviest unit's shifted value.")
    high: float = Field(description="The track's 99th percentile over the text fitted: the top of its scale.")


class GroupsResponse(BaseModel):
    source: Literal["validation", "text"] = Field(description="What the groups were fitted on: the first "
                                                              "max_groups_chars of the model's validation text, "
                                                              "or the text sent.")
    corpus: str | None = Field(description="The corpus the validation text came from.")
    chars: int = Field(description="Characters fitted.")
    layer: int
    quantity: str
    error: float = Field(description="Relative reconstruction error ||X - W G|| / ||X|| (Frobenius) over the text "
                                     "fitted, X each unit's values minus its minimum.")
    explained: float = Field(description="1 - error^2: the part of ||X||^2 the groups rebuild.")
    cached: bool = Field(description="The factorisation was kept from an earlier request.")
    text: str = Field(description="The passage the tracks are over, as read.")
    groups: list[Group]
    dropped: list[str]
