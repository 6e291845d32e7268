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

/// `framed`: the transport has no transaction id (RTU on a line or over
/// TCP), see [`checked`].
pub async fn read_once(
    ctx: &mut Context,
    read: &PlannedRead,
    limit: Duration,
    framed: bool,
) -> Outcome {
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
        Ok(Ok(Ok(outcome))) => checked(outcome, read.count, framed),
        Ok(Ok(Err(exception))) => Outcome::Exception(u8::from(exception)),
        Ok(Err(_)) => Outcome::LinkFailed("link_error"),
        Err(_) => Outcome::LinkFailed("timeout"),
    }
}

/// An answer whose length is not the count asked for. On RTU (`framed`: no
/// transaction id) it is no answer to this read: a reply to another
/// request that came late, or a broken frame; refused as a link failure
/// (the connection is rebuilt), never decoded onto the points. On Modbus
/// TCP the transaction id says it is ours: a longer one is cut to the
/// count, a shorter one is kept (the points it lacks are
/// `bad(conversion)`), and the shared connection stays.
pub fn checked(outcome: Outcome, count: u16, framed: bool) -> Outcome {
    let count = usize::from(count);
    let len = match &outcome {
        Outcome::Data(words) => words.len(),
        Outcome::Bits(bits) => bits.len(),
        Outcome::Exception(_) | Outcome::LinkFailed(_) => return outcome,
    };
    if len == count {
        return outcome;
    }
    if framed {
        return Outcome::LinkFailed("wrong_length");
    }
    match outcome {
        Outcome::Data(mut words) => {
            words.truncate(count);
            Outcome::Data(words)
        }
        Outcome::Bits(mut bits) => {
            bits.truncate(count);
            Outcome::Bits(bits)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_of_another_length_than_asked_is_a_link_failure() {
        let kind = |o: Outcome| match o {
            Outcome::Data(w) => format!("data {}", w.len()),
            Outcome::Bits(b) => format!("bits {}", b.len()),
            Outcome::Exception(c) => format!("exception {c}"),
            Outcome::LinkFailed(k) => k.to_string(),
        };
        // RTU: no transaction id, so not ours.
        let rtu = |o, n| kind(checked(o, n, true));
        assert_eq!(rtu(Outcome::Data(vec![0; 10]), 10), "data 10");
        assert_eq!(rtu(Outcome::Data(vec![0; 8]), 10), "wrong_length");
        assert_eq!(rtu(Outcome::Data(vec![0; 12]), 10), "wrong_length");
        assert_eq!(rtu(Outcome::Bits(vec![true; 16]), 16), "bits 16");
        assert_eq!(rtu(Outcome::Bits(vec![true; 8]), 16), "wrong_length");
        assert_eq!(rtu(Outcome::Exception(2), 10), "exception 2");
        // TCP: ours by its transaction id; longer cut, shorter kept.
        let tcp = |o, n| kind(checked(o, n, false));
        assert_eq!(tcp(Outcome::Data(vec![0; 12]), 10), "data 10");
        assert_eq!(tcp(Outcome::Data(vec![0; 8]), 10), "data 8");
    }
}
