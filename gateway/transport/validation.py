"""Request validation against openapi.yaml, reported as field violations.

connexion validates every request before a handler runs; these validators replace its JSON
body and parameter validators so that (1) bodies are parsed with exact decimals, (2) every
violation is reported with its field, not just the first as free text, and (3) no message
echoes the submitted value (it may be a password).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import Any

from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.json_schema import Draft4RequestValidator
from connexion.utils import is_null, is_nullable
from connexion.validators import VALIDATOR_MAP, JSONRequestBodyValidator, ParameterValidator
from jsonschema import Draft4Validator, ValidationError
from starlette.types import Scope

from gateway.domain.jsonmoney import LIMITS, JsonLimitExceeded, MalformedJson, loads
from gateway.transport.state import current
from svc_runtime.errors import FieldViolation


class InvalidRequest(BadRequestProblem):
    """400 with field violations."""

    def __init__(
        self, detail: str, violations: list[FieldViolation], reason: str = "INVALID_ARGUMENT"
    ) -> None:
        super().__init__(detail=detail)
        self.violations = violations
        self.reason = reason


def _field(path: Iterable[Any], name: str = "") -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    if name:
        text = f"{text}.{name}" if text else name
    return text or "body"


def _describe(error: ValidationError) -> str:
    value = error.validator_value
    match error.validator:
        case "type":
            return f"must be of type {value}"
        case "enum":
            return "must be one of " + ", ".join(str(v) for v in value)
        case "pattern":
            return f"must match the pattern {value}"
        case "minLength":
            return f"must be at least {value} characters long"
        case "maxLength":
            return f"must be at most {value} characters long"
        case "minimum":
            return f"must be at least {value}"
        case "maximum":
            return f"must be at most {value}"
        case "minItems":
            return f"must have at least {value} items"
        case "maxItems":
            return f"must have at most {value} items"
        case "minProperties":
            return f"must have at least {value} fields"
        case "anyOf" | "oneOf":
            return "must be a number or a decimal string such as '1542.35'"
        case "format":
            return f"must be a valid {value}"
    return error.message[:200]


def violations_of(errors: Iterable[ValidationError]) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            violations.extend(
                FieldViolation(_field(path, name), "is required")
                for name in error.validator_value
                if name not in error.instance
            )
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            violations.extend(
                FieldViolation(_field(path, name), "is not a field of this request (or is read-only)")
                for name in error.instance
                if name not in known
            )
        else:
            violations.append(FieldViolation(_field(path), _describe(error)))
    return violations


class ExactJsonBodyValidator(JSONRequestBodyValidator):
    """Parses with Decimal for non-integers and keeps the parsed body for the handler."""

    async def _parse(self, stream: AsyncGenerator[bytes, None], scope: Scope) -> Any:
        raw = b"".join([chunk async for chunk in stream])
        if not raw:
            return None
        try:
            body = loads(raw, LIMITS)
        except JsonLimitExceeded as exc:
            raise InvalidRequest(
                str(exc), [FieldViolation("body", "is outside the JSON limits")], "JSON_LIMIT_EXCEEDED"
            ) from None
        except MalformedJson as exc:
            raise InvalidRequest(
                str(exc), [FieldViolation("body", "is not valid JSON")], "MALFORMED_JSON"
            ) from None
        current().body = body
        return body

    def _validate(self, body: Any) -> dict | None:
        if body is None:
            if not self._nullable:
                raise InvalidRequest("the request needs a JSON body", [FieldViolation("body", "is required")])
            return None
        validator = Draft4RequestValidator(self._schema, format_checker=Draft4Validator.FORMAT_CHECKER)
        violations = violations_of(validator.iter_errors(body))
        if violations:
            raise InvalidRequest("the request body is invalid", violations)
        return None


class ViolationsParameterValidator(ParameterValidator):
    """Checks every parameter and reports all violations by parameter name."""

    @staticmethod
    def validate_parameter(
        parameter_type: str, value: Any, param: dict, param_name: str | None = None
    ) -> str | None:
        if is_nullable(param) and is_null(value):
            return None
        if value is not None:
            schema = param.get("schema", param)
            errors = list(
                Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER).iter_errors(value)
            )
            if errors:
                error = errors[0]
                where = "".join(f"[{p}]" for p in error.absolute_path)
                return f"{where + ' ' if where else ''}{_describe(error)}"
            return None
        if param.get("required"):
            return "is required"
        return None

    def validate_request(self, request: Any) -> None:
        violations: list[FieldViolation] = []
        if self.strict_validation:
            extra = self.validate_query_parameter_list(request, security_params=self.security_query_params)
            violations += [
                FieldViolation(name, "is not a parameter of this operation") for name in sorted(extra)
            ]
        checks = (
            ("query", self.validate_query_parameter),
            ("path", self.validate_path_parameter),
            ("header", self.validate_header_parameter),
            ("cookie", self.validate_cookie_parameter),
        )
        for kind, check in checks:
            for param in self.parameters.get(kind, []):
                error = check(param, request)
                if error:
                    violations.append(FieldViolation(param["name"], error))
        if violations:
            raise InvalidRequest("the request parameters are invalid", violations)


VALIDATORS = {
    **VALIDATOR_MAP,
    "parameter": ViolationsParameterValidator,
    "body": MediaTypeDict({"*/*json": ExactJsonBodyValidator}),
}
