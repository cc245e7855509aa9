"""RPC URLs: which ones the clients take, how one is printed, and that no error message
quotes a URL's credentials."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chains.exceptions import RPCError
from chains.urls import MIN_SECRET_CHARS, hide_credentials, redact, rpc_url_problem

URL = "http://me:hunter2@127.0.0.1:8545/v2/AbCdEf0123456789xyzKEY?apikey=sEcReT"
SECRETS = ("hunter2", "AbCdEf0123456789xyzKEY", "sEcReT")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("https://u:p@rpc.example/", "https://u:***@rpc.example/"),
        ("https://token@rpc.example", "https://***@rpc.example"),
        ("https://token:@rpc.example", "https://***@rpc.example"),
        (
            "https://:secret@mainnet.infura.io/v3/0123abcd",
            "https://:***@mainnet.infura.io/v3/0123abcd",
        ),
        (
            "https://eth-mainnet.g.alchemy.com/v2/aB3dE6gH9jK2mN5pQ8sT1vW4yZ7",
            "https://eth-mainnet.g.alchemy.com/v2/***",
        ),
        ("https://rpc.example/polygon-zkevm-mainnet", "https://rpc.example/polygon-zkevm-mainnet"),
        ("https://rpc.example/?key=1&flag", "https://rpc.example/?key=***&***"),
        (URL, "http://me:***@127.0.0.1:8545/v2/***?apikey=***"),
        ("http://[::1", "<unparsable URL>"),
    ],
)
def test_hide_credentials(url: str, shown: str) -> None:
    assert hide_credentials(url) == shown
    assert hide_credentials(shown) == shown  # idempotent


def test_redact_hides_the_url_and_its_secrets_quoted_alone() -> None:
    text = f"POST {URL} failed; server said: bad key AbCdEf0123456789xyzKEY (apikey=sEcReT)"
    shown = redact(text, URL)
    assert shown == (
        "POST http://me:***@127.0.0.1:8545/v2/***?apikey=*** failed; server said: bad key *** "
        "(apikey=***)"
    )
    assert redact(shown, URL) == shown
    assert redact("nothing secret in http://127.0.0.1:8545", "http://127.0.0.1:8545").endswith(
        "http://127.0.0.1:8545"
    )
    short = "http://me:pw@host/?key=1"  # secrets this short are hidden in the URL only
    assert redact(f"{short} said 1 pw", short) == "http://me:***@host/?key=*** said 1 pw"
    network = "https://eth-mainnet.example/?network=mainnet"  # a value the host also holds
    assert redact(f"{network}: no mainnet", network) == (
        "https://eth-mainnet.example/?network=***: no ***"
    )


@given(
    password=st.text("abcdefXYZ0123456789!$", min_size=MIN_SECRET_CHARS, max_size=12),
    key=st.text("abcdefghijkXYZ0123456789_-", min_size=20, max_size=40).filter(
        lambda k: any(c.isdigit() or c.isupper() for c in k)
    ),
    token=st.text("abcdefXYZ0123456789", min_size=MIN_SECRET_CHARS, max_size=20),
)
def test_no_secret_survives_an_error_message(password: str, key: str, token: str) -> None:
    url = f"https://user:{password}@rpc.example:8443/v2/{key}?token={token}"
    error = RPCError(f"eth_call on {url} failed: the server echoed {key} and {token}", url=url)
    for secret in (password, key, token):
        assert secret not in str(error)
        assert secret not in hide_credentials(url)
    assert error.url == url  # the attribute stays as configured, to match endpoints


@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        ("http://127.0.0.1:8545", None),
        ("https://user:pw@rpc.example/v2/key", None),
        (
            "wss://eth-mainnet.g.alchemy.com/v2/aB3dE6gH9jK2mN5pQ8sT1vW4yZ7",
            [
                "'wss://eth-mainnet.g.alchemy.com/v2/***' is a WebSocket URL",
                "JSON-RPC over HTTP(S) only",
                "use the node's https:// endpoint instead",
                "'https://eth-mainnet.g.alchemy.com/v2/***'",
            ],
        ),
        ("ws://127.0.0.1:8546", ["use the node's http:// endpoint", "'http://127.0.0.1:8546'"]),
        ("ftp://node", ["'ftp://node' is not an RPC URL; use http:// or https:// with a host"]),
        ("http://", ["'http://' is not an RPC URL"]),
        ("127.0.0.1:8545", ["has no scheme; write it as 'http://127.0.0.1:8545'"]),
        ("http:/127.0.0.1:8545", ["'http:/127.0.0.1:8545' is not an RPC URL"]),
        ("http://u:pw@host:99999/", ["'http://u:***@host:99999/' is not a URL", "port"]),
        ("  ", ["is empty"]),
    ],
)
def test_rpc_url_problem(url: str, fragments: list[str] | None) -> None:
    problem = rpc_url_problem(url)
    if fragments is None:
        assert problem is None
        return
    assert problem is not None
    for fragment in fragments:
        assert fragment in problem
