"""TLS with a test CA (trustme): serve() over HTTPS, client certificates when verify_client is set."""

from __future__ import annotations

import asyncio
import socket
import ssl

import aiohttp
import pytest
import trustme
from api_fakes import build_app, make_config

from raftpg.api import serve, ssl_context_for
from raftpg.api.tls import client_ssl_context


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("raftpgctl@example")
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "client")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return {k: str(v) for k, v in paths.items()}


def fetch(restapi, client_context: ssl.SSLContext) -> int:
    async def main() -> int:
        app, _, _ = build_app()
        runner = await serve(app, restapi)
        try:
            async with aiohttp.ClientSession() as session:
                url = f"https://{restapi.listen}/primary"
                async with session.get(url, ssl=client_context) as response:
                    return response.status
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def test_https_with_a_test_certificate(pki):
    restapi = make_config(listen=f"127.0.0.1:{free_port()}", certfile=pki["cert"], keyfile=pki["key"]).restapi
    assert fetch(restapi, client_ssl_context(pki["ca"])) == 200


def test_required_client_certificate(pki):
    restapi = make_config(listen=f"127.0.0.1:{free_port()}", certfile=pki["cert"], keyfile=pki["key"],
                          cafile=pki["ca"], verify_client="required").restapi
    assert fetch(restapi, client_ssl_context(pki["ca"], pki["client"])) == 200
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        fetch(restapi, client_ssl_context(pki["ca"]))


def test_a_client_that_does_not_trust_the_ca_is_refused(pki):
    restapi = make_config(listen=f"127.0.0.1:{free_port()}", certfile=pki["cert"], keyfile=pki["key"]).restapi
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        fetch(restapi, client_ssl_context(None))


def test_no_certfile_means_plain_http():
    assert ssl_context_for(make_config().restapi) is None


def test_a_missing_certificate_file_stops_the_start(tmp_path):
    restapi = make_config(certfile=str(tmp_path / "missing.pem")).restapi
    with pytest.raises(OSError):
        ssl_context_for(restapi)
