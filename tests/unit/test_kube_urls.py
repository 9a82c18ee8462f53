"""kube/urls.py gives what urllib.parse gives, for what kubexec sends."""

from __future__ import annotations

import urllib.parse

import pytest

from k8smpi_runtime.kube import urls

TEXTS = ["w-0", "team a", "a/b", "a+b=c&d", "é~_.-", "sh -c 'x; y' \"$1\"", "", "%41", "\x00\n"]


@pytest.mark.parametrize("text", TEXTS)
def test_quote(text: str) -> None:
    assert urls.quote(text) == urllib.parse.quote(text)
    assert urls.quote(text, safe="") == urllib.parse.quote(text, safe="")


def test_urlencode() -> None:
    pairs = [(f"k{i}", t) for i, t in enumerate(TEXTS)] + [("stdin", True), ("n", 3)]
    assert urls.urlencode(pairs) == urllib.parse.urlencode(pairs)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:6443",
        "https://K8S.Example.com",
        "https://[fd00::1]:443/prefix/k8s/clusters/c-1",
        "https://user@host:8443/",
        "https://host/path?x=1#f",
        "http://host:0",
    ],
)
def test_split_server(url: str) -> None:
    ours = urls.split_server(url)
    theirs = urllib.parse.urlsplit(url)
    assert (ours.scheme, ours.netloc, ours.hostname, ours.port, ours.path) == (
        theirs.scheme,
        theirs.netloc,
        theirs.hostname,
        theirs.port,
        theirs.path,
    )


@pytest.mark.parametrize("url", ["https://host:port", "https://host:99999", "https://[fd00::1"])
def test_bad_servers_raise_like_urlsplit(url: str) -> None:
    with pytest.raises(ValueError):
        urllib.parse.urlsplit(url).port  # noqa: B018
    with pytest.raises(ValueError):
        urls.split_server(url)
