"""One parser for every Redis URL: plain, TLS, unix and Sentinel forms, errors that say why, redaction."""

from __future__ import annotations

import argparse

import pytest

from mcpgw.cli import _redis_url, _registry
from mcpgw.redisurl import RedisUrlError, parse, redacted


def test_plain_urls_pass_through_to_redis_py() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://h:6380/2", "unix:///run/redis.sock"):
        target = parse(url)
        assert (target.url, target.sentinel) == (url, False)


def test_sentinel_url_names_every_sentinel_the_service_and_the_database() -> None:
    target = parse("redis+sentinel://:pw%40x@10.0.0.1:26379,10.0.0.2:26380, [::1]:26381/mymaster/3")
    assert target.sentinel
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381))
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 3, None, "pw@x")
    assert parse("redis+sentinel://h:1/svc").db == 0
    assert parse("redis+sentinel://h:1/svc/").db == 0
    assert parse("redis+sentinel://app:s@h:1/svc").username == "app"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://h:1", "service name"),
        ("redis+sentinel://h:1/", "service name"),
        ("redis+sentinel://h/svc", "'h' is not HOST:PORT"),
        ("redis+sentinel://h:1,:2/svc", "':2' is not HOST:PORT"),
        ("redis+sentinel://h:99999/svc", "is not HOST:PORT"),
        ("redis+sentinel://h:1/svc/x", "database 'x' is not a number"),
        ("redis+sentinel://h:1/svc/1/2", "service name"),
        ("redis+sentinel://h:1/svc?ssl=1", "no query parameters"),
        ("http://h:1/0", "expected redis://"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, reason: str) -> None:
    with pytest.raises(RedisUrlError, match=reason.replace("?", r"\?")):
        parse(url)


def test_passwords_never_show() -> None:
    assert redacted("redis://user:s3cret@db.internal:6380/2") == "redis://user:***@db.internal:6380/2"
    assert redacted("redis+sentinel://:s3cret@a:1,b:2/svc/0") == "redis+sentinel://:***@a:1,b:2/svc/0"
    assert redacted("redis+sentinel://a:1,b:2/svc") == "redis+sentinel://a:1,b:2/svc"
    with pytest.raises(RedisUrlError) as error:
        parse("redis+sentinel://:s3cret@a/svc")
    assert "s3cret" not in str(error.value)


def test_the_cli_takes_sentinel_urls_and_refuses_bad_ones_with_the_reason() -> None:
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"
    assert _redis_url(url) == url
    assert _registry(url) == url
    with pytest.raises(argparse.ArgumentTypeError, match="service name"):
        _registry("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(argparse.ArgumentTypeError, match="expected redis://"):
        _redis_url("127.0.0.1:6379")
