"""Exceptions raised by the ring package.

Everything the ring code raises on purpose derives from :class:`RingError`, so a
caller that only wants "the ring is unusable" can catch one class, while the command
line tool can turn any of them into a one-line message.
"""


class RingError(Exception):
    """Base class for every error the ring package raises deliberately."""


class DeviceError(RingError):
    """A device description or search value is malformed or matches nothing."""


class BuilderError(RingError):
    """The builder cannot do what was asked (bad parameters, too few devices...)."""


class RingFormatError(RingError):
    """A ring or builder file is not in a format this version understands."""


class RingSignatureError(RingFormatError):
    """A ring file's HMAC does not match: it was tampered with, truncated, or
    signed with another cluster's secret. Nothing in it has been parsed."""
