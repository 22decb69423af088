"""Background consistency: replicators, auditors, updater and expirer -- the cluster heals itself.

Every node runs the same services over its own devices (DESIGN.md section 7):

* :mod:`replicator.objects` -- object replication: REPLICATE suffix hashes,
  push what peers lack, send handoff partitions home;
* :mod:`replicator.dbs` -- container and account databases: rows since each
  peer's sync point, whole copies for missing or far-behind peers;
* :mod:`replicator.auditor` -- re-read objects (MD5, size) and check
  databases (``PRAGMA integrity_check``); quarantine what is bad so the
  replicators restore it;
* :mod:`replicator.updater` -- retry async pending container/account updates;
* :mod:`replicator.expirer` -- delete objects whose ``X-Delete-At`` passed.

:func:`install` mounts them on a :class:`node.daemon.Node`: the services
(supervised, configured by the ``[replicator]`` table of the node file) and
the ``/replication/`` route of the internal port, which receives pushed
files, database rows and copies, and answers ``GET /replication/status``
(see :mod:`replicator.services`).  The receiving side lives in
``node/storage/replication_*.py``, next to the on-disk formats it writes.
"""

from __future__ import annotations

from node.daemon import Node
from replicator.services import Replication


def install(node: Node) -> Replication:
    """Serve ``/replication/`` on the node's internal port and add the background services.

    Call after the storage server is mounted (``node.internal_default``), so
    both share one database connection pool.  With ``[replicator] enabled =
    false`` only the route is served: the node still receives replication
    from its peers.
    """
    replication = Replication(node)
    node.internal_routes["replication"] = replication.route
    if node.config.replicator.enabled:
        for name, fn in replication.services():
            node.add_service(name, fn)
    return replication


__all__ = ["Replication", "install"]
