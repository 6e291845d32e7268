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
        Ok(Ok(Ok(outcome))) => checked(outcome, read.count),
        Ok(Ok(Err(exception))) => Outcome::Exception(u8::from(exception)),
        Ok(Err(_)) => Outcome::LinkFailed("link_error"),
        Err(_) => Outcome::LinkFailed("timeout"),
    }
}

/// An answer whose length is not the count asked for is no answer to this
/// read: on RTU (no transaction id) a late reply to another request or a
/// broken frame; behind a Modbus TCP gateway, which copies the current
/// request's transaction id onto whatever comes off its serial line, the
/// same. Refused as a link failure (the connection is rebuilt, which also
/// puts a stream that fell one answer behind back in step), never decoded:
/// a shorter or longer block would put values on the wrong points.
pub fn checked(outcome: Outcome, count: u16) -> Outcome {
    let len = match &outcome {
        Outcome::Data(words) => words.len(),
        Outcome::Bits(bits) => bits.len(),
        Outcome::Exception(_) | Outcome::LinkFailed(_) => return outcome,
    };
    if len == usize::from(count) {
        outcome
    } else {
        Outcome::LinkFailed("wrong_length")
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
        let strict = |o, n| kind(checked(o, n));
        assert_eq!(strict(Outcome::Data(vec![0; 10]), 10), "data 10");
        assert_eq!(strict(Outcome::Data(vec![0; 8]), 10), "wrong_length");
        assert_eq!(strict(Outcome::Data(vec![0; 12]), 10), "wrong_length");
        assert_eq!(strict(Outcome::Bits(vec![true; 16]), 16), "bits 16");
        assert_eq!(strict(Outcome::Bits(vec![true; 8]), 16), "wrong_length");
        assert_eq!(strict(Outcome::Exception(2), 10), "exception 2");
    }
}
