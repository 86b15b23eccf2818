"""NodeId and browse path syntax: every form a profile may use, and each typo it must catch."""

from __future__ import annotations

import pytest

from gateway.drivers.opcua.addresses import (
    BrowseStep,
    NodeAddress,
    bind_aliases,
    format_path,
    parse_browse_path,
    parse_node_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ns=2;s=Grinder.Spindle.Speed", NodeAddress("s", "Grinder.Spindle.Speed", 2)),
        ("ns=3;i=1001", NodeAddress("i", "1001", 3)),
        ("i=2258", NodeAddress("i", "2258", 0)),
        ("s=Plain", NodeAddress("s", "Plain", 0)),
        ("ns=2;s=a;b=c", NodeAddress("s", "a;b=c", 2)),
        (
            "ns=2;g=09087e75-8e5e-499b-954f-f2a9603db28a",
            NodeAddress("g", "09087e75-8e5e-499b-954f-f2a9603db28a", 2),
        ),
        ("ns=2;b=M/RbKBsRVkePCePcx24oRA==", NodeAddress("b", "M/RbKBsRVkePCePcx24oRA==", 2)),
        ("nsu=urn:vendor:grinder;s=Speed", NodeAddress("s", "Speed", 0, "urn:vendor:grinder")),
        ("  ns=65535;i=4294967295  ", NodeAddress("i", "4294967295", 65535)),
    ],
)
def test_node_id_forms_parse(text: str, expected: NodeAddress) -> None:
    assert parse_node_id(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("Grinder.Spindle.Speed", "is not a NodeId"),
        ("ns=2;x=1", "is not a NodeId"),
        ("ns=2;i=abc", "numeric identifier 'abc'"),
        ("ns=2;i=4294967296", "numeric identifier"),
        ("ns=-1;i=3", "namespace index '-1'"),
        ("ns=70000;i=1", "namespace index '70000'"),
        ("ns=two;s=X", "namespace index 'two'"),
        ("ns=2;s=", "string identifier is empty"),
        ("ns=2;g=not-a-guid", "is not a GUID"),
        ("ns=2;b=***", "is not base64"),
        ("nsu=;s=X", "needs a namespace URI"),
    ],
)
def test_node_id_mistakes_are_named(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_node_id(text)


def test_node_address_prints_back_as_written() -> None:
    for text in ("ns=2;s=Grinder.Speed", "i=84", "nsu=urn:x;i=5"):
        assert str(parse_node_id(text)) == text
    assert str(parse_node_id("nsu=urn:x;i=5").with_namespace(4)) == "ns=4;i=5"


def test_browse_path_parses_steps_with_namespaces() -> None:
    assert parse_browse_path("0:Objects/2:Grinder/2:Spindle Speed") == (
        BrowseStep(0, "Objects"),
        BrowseStep(2, "Grinder"),
        BrowseStep(2, "Spindle Speed"),
    )
    assert parse_browse_path("/0:Objects/3:A:B") == (BrowseStep(0, "Objects"), BrowseStep(3, "A:B"))


def test_browse_path_steps_may_name_their_namespace_by_alias() -> None:
    steps = parse_browse_path("mt:Monitoring/machine:Spindle/2:Override")
    assert steps == (
        BrowseStep(0, "Monitoring", "mt"),
        BrowseStep(0, "Spindle", "machine"),
        BrowseStep(2, "Override"),
    )
    assert format_path(steps) == "mt:Monitoring/machine:Spindle/2:Override"
    assert bind_aliases(steps, {"mt": 7, "machine": 3}) == (
        BrowseStep(7, "Monitoring"),
        BrowseStep(3, "Spindle"),
        BrowseStep(2, "Override"),
    )
    with pytest.raises(KeyError, match="machine"):
        bind_aliases(steps, {"mt": 7})


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "browse path is empty"),
        ("/", "browse path is empty"),
        ("Objects/2:Grinder", "step 1 'Objects'"),
        ("0:Objects//2:Grinder", "step 2 ''"),
        ("0:Objects/x-y:Grinder", "step 2 'x-y:Grinder'"),
        ("0:Objects/1x:Grinder", "step 2 '1x:Grinder'"),
        ("0:Objects/2:", "step 2 '2:'"),
        ("0:Objects/99999:Grinder", "namespace index '99999'"),
    ],
)
def test_browse_path_mistakes_are_named(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_browse_path(text)
