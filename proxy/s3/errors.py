"""S3 errors: the real codes, statuses and messages, as an XML ``<Error>`` body.

Handlers raise :class:`S3Error` (``raise S3Error("NoSuchKey")``); the
handler turns it into the response S3 would send, with the ``Resource`` and
``RequestId`` fields clients log.  Extra fields (``BucketName``,
``ArgumentName``...) go into the body as S3 puts them there, which some
clients show to users.
"""

from __future__ import annotations

from node.http_server import Response
from proxy.s3.xml import element, render

#: code -> (HTTP status, S3's own message)
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "Error parsing the X-Amz-Credential parameter."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available."),
    "BucketAlreadyOwnedByYou": (409, "Your previous request to create the named bucket succeeded "
                                     "and you already own it."),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the "
                            "Content-Length HTTP header."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS Access Key Id you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidChunkSizeError": (403, "Only the last chunk is allowed to have a size less than 8192 bytes"),
    "InvalidDigest": (400, "The Content-MD5 you specified was invalid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidPart": (400, "One or more of the specified parts could not be found. The part might not "
                         "have been uploaded, or the specified entity tag might not have matched "
                         "the part's entity tag."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order. Parts must be ordered "
                              "by part number."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidStorageClass": (400, "The storage class you specified is not valid"),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against "
                          "our published schema"),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingSecurityHeader": (400, "Your request was missing a required header"),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (404, "The specified upload does not exist. The upload ID may be invalid, or the "
                          "upload may have been aborted or completed."),
    "NoSuchBucketPolicy": (404, "The bucket policy does not exist"),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented"),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the current time "
                                  "is too large."),
    "RequestTimeout": (400, "Your socket connection to the server was not read from or written to "
                            "within the timeout period."),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (403, "The request signature we calculated does not match the "
                                   "signature you provided. Check your key and signing method."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match "
                                       "what was computed."),
}


class S3Error(Exception):
    """An S3 error answer: ``code`` picks status and default message."""

    def __init__(self, code: str, message: str | None = None, *, status: int | None = None,
                 headers: list[tuple[str, str]] | None = None, **fields: str) -> None:
        default_status, default_message = CODES.get(code, (400, code))
        self.code = code
        self.message = message or default_message
        self.status = status or default_status
        self.headers = headers or []
        self.fields = fields
        super().__init__(f"{code}: {self.message}")

    def response(self, resource: str, request_id: str, method: str = "GET") -> Response:
        """The XML error response (HEAD answers carry no body, as S3's)."""
        children = [element("Code", self.code), element("Message", self.message)]
        children += [element(k, v) for k, v in self.fields.items()]
        children += [element("Resource", resource), element("RequestId", request_id)]
        body = render(element("Error", children)) if method != "HEAD" else b""
        headers = [("Content-Type", "application/xml"), *self.headers]
        return Response(self.status, headers, body, content_length=len(body) if body else None)


def status_error(status: int, *, key: bool = True) -> S3Error:
    """An :class:`S3Error` for a backend status nobody mapped more precisely."""
    if status == 404:
        return S3Error("NoSuchKey" if key else "NoSuchBucket")
    if status == 412:
        return S3Error("PreconditionFailed", Condition="If-Match")
    if status == 416:
        return S3Error("InvalidRange")
    if status == 422:
        return S3Error("BadDigest")
    if status == 409:
        return S3Error("OperationAborted", "A conflicting conditional operation is currently in "
                                           "progress against this resource.", status=409)
    if status in (401, 403):
        return S3Error("AccessDenied")
    if status == 413:
        return S3Error("EntityTooLarge")
    if 400 <= status < 500:
        return S3Error("InvalidRequest", status=status)
    return S3Error("ServiceUnavailable", "The cluster could not complete the request; try again.",
                   status=503)
