"""Storage servers: objects, containers and accounts on this node's devices.

:class:`StorageServer` speaks Swift's backend protocol on the internal port
(``/<device>/<partition>/<account>[/<container>[/<object>]]`` with PUT, GET,
HEAD, POST, DELETE, plus ``REPLICATE``), so a Swift-style proxy can drive a
set of nodes through the ring.  Modules:

* :mod:`~node.storage.server` -- the handler, routing to the three servers;
* :mod:`~node.storage.object_server`, :mod:`~node.storage.diskfile`,
  :mod:`~node.storage.hashes` -- objects on disk and the REPLICATE hashes;
* :mod:`~node.storage.container_server`, :mod:`~node.storage.account_server`,
  :mod:`~node.storage.db_server`, :mod:`~node.storage.db`,
  :mod:`~node.storage.container_db`, :mod:`~node.storage.account_db`,
  :mod:`~node.storage.listing` -- SQLite-backed listings;
* :mod:`~node.storage.updates` -- container/account updates and the async
  pending records the updater retries;
* :mod:`~node.storage.paths`, :mod:`~node.storage.devices`,
  :mod:`~node.storage.timestamp`, :mod:`~node.storage.conditional`,
  :mod:`~node.storage.metadata`, :mod:`~node.storage.fsutil`,
  :mod:`~node.storage.httputil` -- the pieces they share.
"""

from node.storage.server import StorageServer

__all__ = ["StorageServer"]
