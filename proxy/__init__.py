"""The public API on every node's public port, translated onto the cluster client.

Swift v1 lives in the ``swift_*`` modules plus its middlewares' equivalents:
``auth`` (``/auth/v1.0``, stateless tokens) and ``users`` (users kept in the
ring), ``acl`` and ``swift_authz`` (who may do what), ``slo``/``dlo``/
``segments`` (large objects), ``tempurl``, ``bulk`` and ``info``.  ``app``
mounts it on a node.  Other APIs (S3, the OpenStack services) sit beside it.
"""
