"""Errors raised while reading the contract's wire formats, and how a failure is told without its content."""

import traceback


class ContractError(Exception):
    """Base class for every error the contract raises."""


class MalformedMessage(ContractError):
    """The bytes are not a message in the Confluent wire format this contract writes."""


class UnsupportedSchema(ContractError):
    """The message names a schema id this build does not know."""


def without_content(failure: BaseException | None) -> str:
    """A failure's type and stack, never its message: messages may quote the personal data they failed on."""
    if failure is None:
        return "no exception"
    return f"{type(failure).__name__}\n" + "".join(traceback.format_tb(failure.__traceback__))
