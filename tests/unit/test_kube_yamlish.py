"""kube/yamlish.py reads kubeconfigs as ``yaml.safe_load`` does, or leaves them to PyYAML.

The invariant, checked on hand-written cases, on documents PyYAML itself writes in several
styles, on kubectl's own output and on thousands of mutations of them: :func:`yamlish.parse`
either raises Unsupported or returns exactly what ``yaml.safe_load`` returns.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from typing import Any

import pytest
import yaml

from k8smpi_runtime.kube import yamlish

# kubectl config view --raw (client-go via sigs.k8s.io/yaml): indentless sequences, sorted keys.
KUBECTL = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJ
    server: https://127.0.0.1:6443
  name: kind-kind
- cluster:
    insecure-skip-tls-verify: true
    server: https://[fd00::1]:443
    tls-server-name: api.example
  name: other
contexts:
- context:
    cluster: kind-kind
    namespace: team-a
    user: kind-kind
  name: kind-kind
current-context: kind-kind
kind: Config
preferences: {}
users:
- name: kind-kind
  user:
    client-certificate-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUR
    client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlF
- name: eks
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      args:
      - --region
      - eu-west-1
      - eks
      - get-token
      command: aws
      env:
      - name: AWS_PROFILE
        value: prod
      interactiveMode: IfAvailable
      provideClusterInfo: false
- name: token
  user:
    token: eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJzdWIiOiJ4In0.c2ln
"""

HAND_WRITTEN = """\
---
# written by a person
apiVersion: v1
kind: Config
current-context: "dev"   # quoted
clusters:
  - name: 'dev'
    cluster:
      server: "https://k.example:6443"
      certificate-authority: ~/certs/ca.crt
users:
  - name: dev
    user:
      token: 'it''s a token'
      tokenFile:
contexts:
  - name: dev
    context: {cluster: dev, user: dev}
"""


def check(text: str) -> None:
    try:
        ours = yamlish.parse(text)
    except yamlish.Unsupported:
        return
    assert ours == yaml.safe_load(text), text


def test_kubectl_output_is_read_without_pyyaml() -> None:
    assert yamlish.parse(KUBECTL) == yaml.safe_load(KUBECTL)


def test_flow_mappings_are_left_to_pyyaml() -> None:
    with pytest.raises(yamlish.Unsupported):
        yamlish.parse(HAND_WRITTEN)
    assert yamlish.load(HAND_WRITTEN) == yaml.safe_load(HAND_WRITTEN)


def test_json_is_read_as_json() -> None:
    doc = yaml.safe_load(KUBECTL)
    assert yamlish.load(json.dumps(doc, indent=2)) == doc


@pytest.mark.parametrize(
    "text",
    [
        "a: b\n",
        "a: 'b' # c\n",
        'a: "x\\ty\\u00e9\\\\"\n',
        "a:\n  b:\n  - x1\n  - -x\n  - --flag\n  -\n  - ''\n",
        "a: yes\nb: No\nc: ~\nd: null\ne:\nf: off\n",
        "a: b#c\nb: x # y\nc: http://h:1/p\n",
        "a:\n- b: c\n  d:\n    e: f\n- g\n",
        "'quoted key': v\n\"k2\": v2\n",
        "a: b\r\nc: d\r\n",
        "a: {}\nb: []\n",
    ],
)
def test_the_subset(text: str) -> None:
    assert yamlish.parse(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\n",  # a number
        "a: 1.5\n",
        "a: -1\n",
        "a: .inf\n",
        "a: 2001-12-14\n",
        "a: |\n  block\n",
        "a: >\n  folded\n",
        "a: &x b\nc: *x\n",
        "a: !!str b\n",
        "a: [b, c]\n",
        "a: {b: c}\n",
        "a: b\n  c\n",  # a multi-line plain scalar
        "a: 'b\n  c'\n",
        "a:\tb\n",
        "<<: {}\n",
        "? a\n: b\n",
        "a: b\n---\nc: d\n",
        "%YAML 1.1\n---\na: b\n",
        "- a\n- b\n",  # not a mapping at the top
        "yes: b\n",
        "a: b: c\n",
        'a: "\\q"\n',
        "\ufeffa: b\n",
        "a: b\u2028c\n",
    ],
)
def test_outside_the_subset(text: str) -> None:
    with pytest.raises(yamlish.Unsupported):
        yamlish.parse(text)


def random_doc(rng: random.Random, depth: int = 0) -> Any:
    words = [
        "a", "b-c", "server", "https://x:6443", "--flag", "-x", "yes", "No", "null", "", "~",
        "1", "0.5", "it's", 'say "hi"', "a: b", "a #b", "#c", "x#y", "\u00e9t\u00e9", "[x]",
        "{y}", "*z", "&w", "!t", "|", ">", "%p", "@q", "`r", "?s", ":t", ",u", "LS0tLS1C",
        "a:b", "trailing ", " leading", "tab\there", "line\nbreak", "=", "<<", ".dot",
    ]  # fmt: skip
    if depth > 3 or rng.random() < 0.3:
        choice = rng.random()
        if choice < 0.1:
            return rng.choice([True, False, None])
        if choice < 0.15:
            return rng.choice([{}, []])
        return rng.choice(words)
    if rng.random() < 0.6:
        return {rng.choice(words): random_doc(rng, depth + 1) for _ in range(rng.randint(1, 4))}
    return [random_doc(rng, depth + 1) for _ in range(rng.randint(1, 4))]


def test_generated_documents_in_pyyamls_styles() -> None:
    rng = random.Random(13)  # noqa: S311 - reproducible, not secret
    read = 0
    for _ in range(500):
        doc = {"top": random_doc(rng), "kind": "Config"}
        styles: tuple[dict[str, Any], ...] = (
            {"default_flow_style": False},
            {"default_flow_style": False, "indent": 4},
            {"default_flow_style": False, "sort_keys": False, "allow_unicode": True},
            {"default_flow_style": None},
        )
        for style in styles:
            text = str(yaml.safe_dump(doc, None, **style))
            check(text)
            try:
                yamlish.parse(text)
                read += 1
            except yamlish.Unsupported:
                pass
    assert read > 400, f"only {read} of 2000 documents were inside the subset"


def test_mutations_never_disagree_with_pyyaml() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible, not secret
    pieces = [" ", "  ", "-", "- ", ":", ": ", "#", " #", "'", '"', "\\", "\n", "\r\n", "x"]
    base = [KUBECTL, yaml.safe_dump(yaml.safe_load(KUBECTL), indent=4), HAND_WRITTEN]
    for _ in range(2000):
        text = rng.choice(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            if rng.random() < 0.5:
                text = text[:at] + rng.choice(pieces) + text[at:]
            else:
                text = text[:at] + text[at + rng.randint(1, 3) :]
        try:
            expected = yaml.safe_load(text)
        except yaml.YAMLError:
            try:
                yamlish.parse(text)
            except yamlish.Unsupported:
                continue
            raise AssertionError(f"PyYAML refuses what the subset read:\n{text}") from None
        try:
            ours = yamlish.parse(text)
        except yamlish.Unsupported:
            continue
        assert ours == expected, text


def test_loading_a_kubeconfig_imports_no_yaml() -> None:
    code = (
        "import sys; from k8smpi_runtime.kube import yamlish; "
        f"doc = yamlish.load({KUBECTL!r}); "
        "assert doc['current-context'] == 'kind-kind'; assert 'yaml' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
