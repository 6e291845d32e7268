//! One Modbus read, whatever the table, within a time limit: the two-level
//! result of tokio-modbus (link failed / device answered with an exception)
//! flattened into one [`Outcome`]. Used by the collector and by `adit probe`.

use std::time::Duration;

use adit_core::modbus::Table;
use tokio::time::timeout;
use tokio_modbus::client::{Context, Reader};

use crate::plan::PlannedRead;
use crate::poll::ReadData;

/// What one read produced.
pub enum Outcome {
    Data(Vec<u16>),
    Bits(Vec<bool>),
    Exception(u8),
    LinkFailed(&'static str),
}

impl Outcome {
    /// The answer's data, if the device answered with data.
    pub fn data(&self) -> Option<ReadData<'_>> {
        match self {
            Outcome::Data(words) => Some(ReadData::Words(words)),
            Outcome::Bits(bits) => Some(ReadData::Bits(bits)),
            _ => None,
        }
    }
}

pub async fn read_once(ctx: &mut Context, read: &PlannedRead, limit: Duration) -> Outcome {
    let call = async {
        match read.table {
            Table::Coil => ctx
                .read_coils(read.start, read.count)
                .await
                .map(|r| r.map(Outcome::Bits)),
            Table::DiscreteInput => ctx
                .read_discrete_inputs(read.start, read.count)
                .await
                .map(|r| r.map(Outcome::Bits)),
            Table::HoldingRegister => ctx
                .read_holding_registers(read.start, read.count)
                .await
                .map(|r| r.map(Outcome::Data)),
            Table::InputRegister => ctx
                .read_input_registers(read.start, read.count)
                .await
                .map(|r| r.map(Outcome::Data)),
        }
    };
    match timeout(limit, call).await {
        Ok(Ok(Ok(outcome))) => outcome,
        Ok(Ok(Err(exception))) => Outcome::Exception(u8::from(exception)),
        Ok(Err(_)) => Outcome::LinkFailed("link_error"),
        Err(_) => Outcome::LinkFailed("timeout"),
    }
}
