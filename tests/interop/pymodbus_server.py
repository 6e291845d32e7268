#!/usr/bin/env python3
"""A third-party Modbus TCP server (pymodbus) holding known values in every
type and word order, encoded here with Python's struct module, independently
of adit's codec. Used by crates/adit/tests/interop_pymodbus.rs.

Usage: pymodbus_server.py PORT
Prints "ready" on stdout once it listens. The register map is VALUES below;
the Rust test declares the same map as points and expects the same numbers.
"""

import asyncio
import logging
import struct
import sys

from pymodbus.server import StartAsyncTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def words(fmt, value, order):
    """Registers for `value` packed big-endian by `fmt`, put in `order`."""
    raw = struct.pack(">" + fmt, value)
    regs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA"):
        regs = regs[::-1]
    if order in ("BADC", "DCBA"):
        regs = [r[::-1] for r in regs]
    return [int.from_bytes(r, "big") for r in regs]


def text(value, registers, order):
    raw = value.encode("ascii").ljust(2 * registers, b"\0")
    regs = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        regs = [r[::-1] for r in regs]
    return [int.from_bytes(r, "big") for r in regs]


# (holding address, struct format or "str", value, order[, registers])
VALUES = [
    (0, "f", 238.5, "ABCD"),
    (2, "f", 238.5, "CDAB"),
    (4, "f", 238.5, "BADC"),
    (6, "f", 238.5, "DCBA"),
    (8, "I", 3_000_000_000, "ABCD"),
    (10, "I", 3_000_000_000, "CDAB"),
    (12, "i", -123_456, "BADC"),
    (14, "i", -123_456, "DCBA"),
    (16, "h", -2, "ABCD"),
    (17, "H", 65_000, "ABCD"),
    (18, "h", -300, "BADC"),
    (20, "d", -12_345.678, "ABCD"),
    (24, "d", -12_345.678, "CDAB"),
    (28, "d", -12_345.678, "BADC"),
    (32, "d", -12_345.678, "DCBA"),
    (36, "q", -9_876_543_210, "ABCD"),
    (40, "Q", 18_000_000_000_000_000_000, "DCBA"),
    (44, "q", -9_876_543_210, "CDAB"),
    (50, "str", "TUNNEL A", "ABCD", 4),
    (54, "str", "TUNNEL A", "BADC", 4),
]
COILS = [True, False, True, True]
DISCRETE = [False, True]
INPUT = [1234]


def holding_registers():
    regs = [0] * 60
    for entry in VALUES:
        address, fmt, value, order = entry[:4]
        encoded = text(value, entry[4], order) if fmt == "str" else words(fmt, value, order)
        regs[address : address + len(encoded)] = encoded
    return regs


async def main(port):
    device = SimDevice(
        id=0,
        simdata=(
            [SimData(address=0, values=COILS, datatype=DataType.BITS)],
            [SimData(address=0, values=DISCRETE, datatype=DataType.BITS)],
            [SimData(address=0, values=holding_registers(), datatype=DataType.REGISTERS)],
            [SimData(address=0, values=INPUT, datatype=DataType.REGISTERS)],
        ),
    )
    server = asyncio.ensure_future(StartAsyncTcpServer(device, address=("127.0.0.1", port)))
    # Report readiness once the port accepts connections.
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    print("ready", flush=True)
    await server


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(int(sys.argv[1])))
