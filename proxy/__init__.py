"""The public API on every node's public port: Swift v1 (and later S3 and the OpenStack APIs), translated onto the cluster client."""
