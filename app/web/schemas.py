"""What every request and response body shares: strict requests, limits taken from the
settings, the error body.

Requests are strict (no "5" for 5, no unknown fields), so a typo such as `temprature`
is refused instead of silently ignored. Every limit a field takes from the settings is
declared on it (Limit), so the document and the validation say the same number."""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, model_validator
from pydantic_core import PydanticCustomError, core_schema

if TYPE_CHECKING:
    from ..settings import Settings


# The settings of the app serving the request, bound by openapi.bind_settings (a dependency of
# every route, solved before the body is read) so the limits below check the server's own
# values. Outside a request (a script building a request body) no limit applies.
REQUEST_SETTINGS: ContextVar[Settings | None] = ContextVar("rnnscope_request_settings", default=None)


# Where a published limit goes in the JSON schema; app/web/openapi.py fills in the number.
LIMIT_KEY = "x-rnnscope-limit"


KEYWORDS = {"string": "maxLength", "array": "maxItems", "integer": "maximum", "number": "maximum"}


@dataclass(frozen=True)
class Limit:
    """Field metadata: the value may be at most the smallest of these settings plus `offset`
    (characters of a string, items of a list, or the number itself). One declaration both
    refuses a value over it with a 422 naming the setting and publishes it in /openapi.json
    as maxLength, maxItems or maximum, so the contract is the server's real one."""

    settings: tuple[str, ...]
    offset: int = 0

    def bound(self, settings: Settings) -> int:
        return min(getattr(settings, name) for name in self.settings) + self.offset

    def names(self) -> str:
        return " and ".join(f"RNNSCOPE_{name.upper()}" for name in self.settings)

    def check(self, value: Any) -> Any:
        settings = REQUEST_SETTINGS.get()
        if settings is None:
            return value
        bound = self.bound(settings)
        if isinstance(value, str | list) and len(value) > bound:
            kind, what = ("string_too_long", "String") if isinstance(value, str) else ("too_long", "List")
            unit = "characters" if isinstance(value, str) else "items"
            raise PydanticCustomError(kind, f"{what} should have at most {{max_length}} {unit} "
                                            f"(setting {self.names()})", {"max_length": bound})
        if isinstance(value, int | float) and value > bound:
            raise PydanticCustomError("less_than_equal", f"Input should be less than or equal to {{le}} "
                                                         f"(setting {self.names()})", {"le": bound})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema[LIMIT_KEY] = self.marker(KEYWORDS[json_schema["type"]])
        return json_schema

    def marker(self, keyword: str) -> dict[str, Any]:
        return {"keyword": keyword, "settings": list(self.settings), "offset": self.offset}


def limit(*settings: str, offset: int = 0) -> Limit:
    return Limit(settings, offset)


class StrictBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def integral_numbers_are_integers(cls, data: Any) -> Any:
        """JSON Schema's integer is any number without a fraction, so 5.0 is one; strict
        pydantic would refuse it. Strings stay refused."""
        if not isinstance(data, dict):
            return data
        fields = integer_fields(cls)
        return {k: integer(v) if k in fields else v for k, v in data.items()}


def integer(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [integer(v) for v in value]
    return value


@cache
def integer_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields whose type is int, int | None or list[int]."""
    def holds_int(tp: Any) -> bool:
        if tp is int:
            return True
        args = [a for a in get_args(tp) if a is not type(None)]
        origin = get_origin(tp)
        if origin is Annotated:
            return holds_int(args[0])
        return origin in (list, Union, UnionType) and len(args) == 1 and holds_int(args[0])
    return frozenset(name for name, f in model.model_fields.items() if holds_int(f.annotation))


class ErrorMessage(BaseModel):
    detail: str = Field(description="What was wrong, and the limit or setting involved.")


class Health(BaseModel):
    status: Literal["ok"]
    models: int
    warming: bool = Field(False, description="Whether the views' caches are still being prepared ahead of "
                                             "requests (setting RNNSCOPE_WARM_ON_START).")
