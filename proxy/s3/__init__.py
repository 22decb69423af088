"""The S3 API: buckets and objects over the same cluster as the Swift API.

:class:`proxy.s3.handler.S3API` is the entry point; ``proxy.app`` routes a
request to it when :meth:`S3API.is_s3_request` says the request is S3's.
"""
