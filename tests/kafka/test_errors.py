"""The table between our exceptions and Kafka's error codes."""

from __future__ import annotations

import inspect

import pytest

from shmbroker import errors
from shmbroker.kafka.errors import TABLE, UNMAPPED, Code, code_for, error_for

EVERY_ERROR = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.ShmbrokerError) and cls.__module__ == errors.__name__
]


def test_every_exception_class_has_a_code_or_a_reason() -> None:
    mapped = {cls for cls, _ in TABLE}
    missing = [c.__name__ for c in EVERY_ERROR if c not in mapped and c not in UNMAPPED]
    assert missing == [], f"add these to kafka/errors.py TABLE or UNMAPPED: {missing}"
    assert not mapped & set(UNMAPPED)


@pytest.mark.parametrize("cls", EVERY_ERROR, ids=lambda c: c.__name__)
def test_every_exception_resolves_to_a_kafka_code(
    cls: type[errors.ShmbrokerError],
) -> None:
    code = code_for(cls("x"))
    assert isinstance(code, Code)
    if cls in dict(TABLE):
        assert code == dict(TABLE)[cls]


@pytest.mark.parametrize(
    ("cls", "code"), TABLE, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_codes_map_back_to_a_class_with_the_same_code(
    cls: type[errors.ShmbrokerError], code: Code
) -> None:
    back = error_for(code, "why")
    assert code_for(back) == code
    assert isinstance(back, errors.ShmbrokerError)
    assert "why" in str(back)
    assert code.name in str(back)


def test_the_first_class_listed_for_a_code_is_the_one_raised() -> None:
    assert type(error_for(Code.UNKNOWN_TOPIC_OR_PARTITION)) is errors.UnknownTopic
    assert type(error_for(Code.REQUEST_TIMED_OUT)) is errors.RingFull


def test_subclasses_take_their_own_code_before_their_bases() -> None:
    assert code_for(errors.RingFull("full")) == Code.REQUEST_TIMED_OUT
    assert code_for(errors.BrokerUnavailable("restarting")) == Code.LEADER_NOT_AVAILABLE
    assert code_for(errors.UnknownTopic("gone")) == Code.UNKNOWN_TOPIC_OR_PARTITION
    assert code_for(ValueError("not ours")) == Code.UNKNOWN_SERVER_ERROR


def test_an_unknown_code_is_a_plain_error_naming_it() -> None:
    exc = error_for(12345, "from the future")
    assert type(exc) is errors.ShmbrokerError
    assert "12345" in str(exc)
