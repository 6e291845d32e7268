#!/usr/bin/env python3
"""An independent OPC UA server for adit's interop test: python asyncua.

Usage: asyncua_server.py PORT DIR [WITHOUT]
Serves, under namespace urn:adit:interop:asyncua (its index differs from
async-opcua's), known values of many built-in types, an array, a variable
with a Bad status, and a counter that moves every 100 ms, over
Basic256Sha256 SignAndEncrypt with a self-signed certificate written to
DIR/server-cert.der (the test trusts it as an engineer would). Prints
"ready NS" once serving (NS = the namespace index), then runs until killed.
WITHOUT, a comma-separated list of variable names, leaves those out (a
server restarted after a configuration change: the client's monitored
items on them are refused).
"""

import asyncio
import datetime
import sys
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import load_pem_x509_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

URI = "urn:adit:interop:asyncua"
APP_URI = "urn:adit:interop:asyncua:server"


async def main(port: int, directory: Path, without: set) -> None:
    key, cert = directory / "server-key.pem", directory / "server-cert.der"
    await setup_self_signed_certificate(
        key, cert, APP_URI, "localhost",
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        {"countryName": "IE", "organizationName": "adit interop", "commonName": "asyncua interop"},
    )
    raw = cert.read_bytes()
    if raw.startswith(b"-----BEGIN"):
        cert.write_bytes(load_pem_x509_certificate(raw).public_bytes(Encoding.DER))

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/interop/")
    server.set_server_name("asyncua interop")
    await server.set_application_uri(APP_URI)
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    # Another namespace first: ours gets an index unlike async-opcua's.
    await server.register_namespace("urn:adit:interop:other")
    ns = await server.register_namespace(URI)
    objects = server.nodes.objects
    folder = await objects.add_folder(ua.NodeId("Interop", ns), "Interop")

    async def var(name, value, vtype):
        if name in without:
            return None
        return await folder.add_variable(ua.NodeId(name, ns), name, ua.Variant(value, vtype))

    await var("Double", 12.625, ua.VariantType.Double)
    await var("Float", -3.5, ua.VariantType.Float)
    await var("Int16", -12345, ua.VariantType.Int16)
    await var("UInt32", 4000000000, ua.VariantType.UInt32)
    await var("Int64", -9007199254740993, ua.VariantType.Int64)
    await var("Boolean", True, ua.VariantType.Boolean)
    await var("String", "ventilation auto", ua.VariantType.String)
    await var(
        "DateTime",
        datetime.datetime(2026, 12, 4, 18, 0, 0, tzinfo=datetime.timezone.utc),
        ua.VariantType.DateTime,
    )
    await var("Array", [1.5, 2.5, 3.5], ua.VariantType.Double)
    broken = await var("Broken", 7.0, ua.VariantType.Double)
    if broken is not None:
        await broken.write_value(
            ua.DataValue(ua.Variant(7.0, ua.VariantType.Double), StatusCode=ua.StatusCode(ua.StatusCodes.BadSensorFailure))
        )
    numeric = await folder.add_variable(ua.NodeId(5001, ns), "Numeric", ua.Variant(42, ua.VariantType.UInt16))
    counter = await var("Counter", 0, ua.VariantType.UInt32)

    async with server:
        print(f"ready {ns}", flush=True)
        n = 0
        while True:
            await asyncio.sleep(0.1)
            n += 1
            if counter is not None:
                await counter.write_value(ua.Variant(n, ua.VariantType.UInt32))
        del numeric


if __name__ == "__main__":
    left_out = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else set()
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), left_out))
