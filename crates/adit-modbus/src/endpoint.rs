//! Where a device is and how to open a connection to it. Devices at the same
//! endpoint (one gateway address, one serial port) share one connection and
//! one request in flight.

use std::net::SocketAddr;
use std::time::Duration;

use adit_config::{ModbusSettings, Parity, Protocol, SerialConfig};
use tokio::time::timeout;
use tokio_modbus::client::Context;
use tokio_modbus::Slave;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(String),
    RtuOverTcp(String),
    Rtu(SerialConfig),
}

impl Endpoint {
    pub fn of(protocol: Protocol, device: &ModbusSettings) -> Self {
        match (protocol, &device.serial) {
            (Protocol::ModbusRtu, Some(serial)) => Endpoint::Rtu(serial.clone()),
            (Protocol::ModbusRtuOverTcp, _) => Endpoint::RtuOverTcp(device.address.clone()),
            _ => Endpoint::Tcp(device.address.clone()),
        }
    }

    /// Short description for logs, e.g. `tcp 10.0.0.5:502`.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Tcp(a) => format!("tcp {a}"),
            Endpoint::RtuOverTcp(a) => format!("rtu-over-tcp {a}"),
            Endpoint::Rtu(s) => format!("rtu {}", s.port),
        }
    }

    /// Whether a late reply can be told apart from the next one (MBAP has
    /// transaction ids; RTU has none, so RTU links are reopened after any
    /// timeout just like TCP ones).
    pub fn is_serial(&self) -> bool {
        matches!(self, Endpoint::Rtu(_))
    }
}

async fn resolve(address: &str) -> Result<Vec<SocketAddr>, String> {
    Ok(tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("resolve {address}: {e}"))?
        .collect())
}

async fn tcp_stream(address: &str) -> Result<tokio::net::TcpStream, String> {
    let mut last = format!("{address}: no address");
    for addr in resolve(address).await? {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

/// Opens a connection, within `limit`.
pub async fn open(endpoint: &Endpoint, unit: u8, limit: Duration) -> Result<Context, String> {
    let attempt = async {
        match endpoint {
            Endpoint::Tcp(address) => {
                let stream = tcp_stream(address).await?;
                Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)))
            }
            Endpoint::RtuOverTcp(address) => {
                let stream = tcp_stream(address).await?;
                Ok(tokio_modbus::client::rtu::attach_slave(stream, Slave(unit)))
            }
            Endpoint::Rtu(serial) => {
                let port = open_serial(serial)?;
                // RTU has no transaction id: a slave's late reply to a
                // request that timed out (the reason for most reopenings)
                // would be taken for the answer to the next request. Let
                // the line go quiet, then drop whatever arrived.
                tokio::time::sleep(late_reply_wait(serial.baud_rate).min(limit / 2)).await;
                tokio_serial::SerialPort::clear(&port, tokio_serial::ClearBuffer::Input)
                    .map_err(|e| format!("clear {}: {e}", serial.port))?;
                Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(unit)))
            }
        }
    };
    timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("connect timed out after {limit:?}")))
}

/// How long a late reply can still be arriving: the longest RTU frame (256
/// bytes of 11 bits) at `baud`, and at least 50 ms.
pub fn late_reply_wait(baud: u32) -> Duration {
    let frame_ms = 256 * 11 * 1000 / u64::from(baud.max(1));
    Duration::from_millis(frame_ms.max(50))
}

fn open_serial(serial: &SerialConfig) -> Result<tokio_serial::SerialStream, String> {
    use tokio_serial::SerialPortBuilderExt;
    let parity = match serial.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = if serial.data_bits == 7 {
        tokio_serial::DataBits::Seven
    } else {
        tokio_serial::DataBits::Eight
    };
    let stop_bits = if serial.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    tokio_serial::new(&serial.port, serial.baud_rate)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(|e| format!("open {}: {e}", serial.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_reply_is_waited_for_as_long_as_the_longest_frame_takes() {
        assert_eq!(late_reply_wait(9600), Duration::from_millis(293));
        assert_eq!(late_reply_wait(1200), Duration::from_millis(2346));
        assert_eq!(late_reply_wait(115_200), Duration::from_millis(50));
        assert_eq!(late_reply_wait(0), Duration::from_secs(2816));
    }
}
