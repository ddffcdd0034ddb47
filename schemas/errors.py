"""Errors raised while reading the contract's wire formats."""


class ContractError(Exception):
    """Base class for every error the contract raises."""


class MalformedMessage(ContractError):
    """The bytes are not a message in the Confluent wire format this contract writes."""


class UnsupportedSchema(ContractError):
    """The message names a schema id this build does not know."""
