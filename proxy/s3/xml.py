"""Just enough XML for S3: build response documents, parse small request bodies.

Responses are trees of :class:`Element` rendered with the S3 namespace on
the root, as S3 sends them.  Request bodies (CreateBucketConfiguration,
Delete, CompleteMultipartUpload) are parsed with the standard library
after refusing DTDs, so entity tricks cannot expand a small body; tags are
compared without their namespace, since clients differ on sending one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
#: a bigger request document than any real client sends (1000 keys in a Delete is ~100 KiB)
MAX_XML_BODY = 2 * 1024 * 1024


@dataclass
class Element:
    tag: str
    text: str | None = None
    children: list[Element] = field(default_factory=list)
    #: raw attribute text (``xsi:type="CanonicalUser"``), already escaped
    attrs: str = ""


def element(tag: str, content: str | int | bool | list[Element] | None = None) -> Element:
    """``element("Key", "a")`` or ``element("Contents", [children...])``."""
    if isinstance(content, list):
        return Element(tag, None, content)
    if isinstance(content, bool):
        return Element(tag, "true" if content else "false")
    return Element(tag, None if content is None else str(content))


def _write(node: Element, out: list[str], root: bool) -> None:
    # S3 puts its namespace on every document root except <Error>.
    attrs = f' xmlns="{S3_NS}"' if root and node.tag != "Error" else ""
    if node.attrs:
        attrs += " " + node.attrs
    if node.children:
        out.append(f"<{node.tag}{attrs}>")
        for child in node.children:
            _write(child, out, False)
        out.append(f"</{node.tag}>")
    elif node.text is None or node.text == "":
        out.append(f"<{node.tag}{attrs}></{node.tag}>" if node.text == "" else f"<{node.tag}{attrs}/>")
    else:
        out.append(f"<{node.tag}{attrs}>{escape(node.text)}</{node.tag}>")


def render(root: Element) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    _write(root, out, True)
    return "".join(out).encode("utf-8")


class XMLError(ValueError):
    """The body is not well-formed XML of the expected shape (S3's MalformedXML)."""


def local(tag: str) -> str:
    """``{ns}Key`` -> ``Key``."""
    return tag.rpartition("}")[2]


def parse(data: bytes, root_tag: str) -> ET.Element:
    """Parse a request document whose root must be ``root_tag``."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise XMLError("DTDs are not accepted")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise XMLError(str(exc)) from exc
    if local(root.tag) != root_tag:
        raise XMLError(f"expected <{root_tag}>, got <{local(root.tag)}>")
    return root


def children(node: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in node if local(c.tag) == tag]


def child_text(node: ET.Element, tag: str) -> str | None:
    found = children(node, tag)
    return (found[0].text or "") if found else None
