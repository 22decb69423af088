"""``GET /info``: what this cluster offers, in Swift's shape.

Clients read it to decide how to talk to us (python-swiftclient switches to
SLO uploads and bulk deletes when the sections are there), so section names
and keys are Swift's, and the limits are the ones the proxy enforces.
"""

from __future__ import annotations

import json

from proxy.bulk import BULK_DELETE_INFO
from proxy.dlo import DLO_INFO
from proxy.slo import SLO_INFO
from proxy.swift_limits import SWIFT_INFO
from proxy.tempurl import TEMPURL_INFO

#: the Swift release whose API this proxy follows
SWIFT_VERSION = "2.34.0"


def info_document() -> bytes:
    return json.dumps({
        "swift": {"version": SWIFT_VERSION, **SWIFT_INFO},
        "slo": SLO_INFO,
        "dlo": DLO_INFO,
        "tempurl": TEMPURL_INFO,
        "bulk_delete": BULK_DELETE_INFO,
        "tempauth": {"account_acls": False},
    }).encode()
