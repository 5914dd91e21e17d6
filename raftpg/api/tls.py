"""TLS for the REST API server (``restapi.certfile``/``keyfile``/``cafile``/``verify_client``) and for
raftpgctl as its client."""

from __future__ import annotations

import ssl

from raftpg.config import RestApiSettings

_VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def ssl_context_for(restapi: RestApiSettings) -> ssl.SSLContext | None:
    """The server context, or None when ``certfile`` is not set (plain HTTP).

    ``keyfile`` defaults to the certfile (a PEM with both). Client certificates are checked against
    ``cafile`` when ``verify_client`` is ``optional`` or ``required``. TLS 1.2 is the minimum.
    Raises OSError / ssl.SSLError when a file is missing or unreadable: the node must not start
    without the TLS the operator asked for.
    """
    if not restapi.certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(restapi.certfile, restapi.keyfile or None)
    if restapi.cafile:
        context.load_verify_locations(cafile=restapi.cafile)
    context.verify_mode = _VERIFY[restapi.verify_client]
    return context


def client_ssl_context(cafile: str | None, certfile: str | None = None, keyfile: str | None = None,
                       insecure: bool = False) -> ssl.SSLContext:
    """A client context trusting ``cafile`` (or the system store), presenting a client cert if given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if certfile:
        context.load_cert_chain(certfile, keyfile or None)
    return context
