//! The simulator's TCP server and the task that moves its values.

use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adit_config::{DataType, Table};
use adit_modbus::codec::{encode_registers, RawValue};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::scenario::{tunnel_signals, Signal, TunnelModel};

/// How often simulated values move.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The registers and model of one unit id.
struct Unit {
    model: TunnelModel,
    frozen: HashMap<&'static str, f64>,
    /// Engineering value of each signal as currently served (after quantization).
    served: HashMap<&'static str, f64>,
    holding: HashMap<u16, u16>,
    input: HashMap<u16, u16>,
    coils: HashMap<u16, bool>,
    discrete: HashMap<u16, bool>,
}

struct State {
    signals: Vec<Signal>,
    units: BTreeMap<u8, Unit>,
}

impl State {
    fn refresh(&mut self, dt: f64) {
        for unit in self.units.values_mut() {
            unit.model.step(dt);
            for s in &self.signals {
                let value = unit
                    .frozen
                    .get(s.name)
                    .copied()
                    .unwrap_or_else(|| unit.model.value(s));
                let served = write_signal(unit, s, value);
                unit.served.insert(s.name, served);
            }
        }
    }
}

/// Encodes `value` into the unit's registers; returns the value as served.
fn write_signal(unit: &mut Unit, s: &Signal, value: f64) -> f64 {
    match s.table {
        Table::Coil | Table::DiscreteInput => {
            let on = value != 0.0;
            let map = if s.table == Table::Coil {
                &mut unit.coils
            } else {
                &mut unit.discrete
            };
            map.insert(s.address, on);
            f64::from(u8::from(on))
        }
        Table::HoldingRegister | Table::InputRegister => {
            let (raw, served) = match s.data_type {
                DataType::F32 => (RawValue::Float(value), f64::from(value as f32)),
                DataType::F64 => (RawValue::Float(value), value),
                _ => {
                    let raw = (value / s.scale).round();
                    (RawValue::Signed(raw as i64), raw * s.scale)
                }
            };
            let mut regs = [0u16; 4];
            let width = usize::from(s.data_type.register_count());
            if encode_registers(raw, s.data_type, s.order, &mut regs[..width]).is_ok() {
                let map = if s.table == Table::HoldingRegister {
                    &mut unit.holding
                } else {
                    &mut unit.input
                };
                for (i, r) in regs[..width].iter().enumerate() {
                    map.insert(s.address + i as u16, *r);
                }
            }
            served
        }
    }
}

/// The values at `start..start + count`, or exception 2 if any is not mapped.
fn read_range<T: Copy>(
    map: &HashMap<u16, T>,
    start: u16,
    count: u16,
) -> Result<Vec<T>, ExceptionCode> {
    (0..count)
        .map(|i| {
            start
                .checked_add(i)
                .and_then(|a| map.get(&a).copied())
                .ok_or(ExceptionCode::IllegalDataAddress)
        })
        .collect()
}

#[derive(Clone)]
struct SimService {
    state: Arc<Mutex<State>>,
}

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(unit) = state.units.get(&req.slave) else {
            return ready(Err(ExceptionCode::GatewayTargetDevice));
        };
        ready(match req.request {
            Request::ReadHoldingRegisters(a, n) => {
                read_range(&unit.holding, a, n).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(a, n) => {
                read_range(&unit.input, a, n).map(Response::ReadInputRegisters)
            }
            Request::ReadCoils(a, n) => read_range(&unit.coils, a, n).map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => {
                read_range(&unit.discrete, a, n).map(Response::ReadDiscreteInputs)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Listens on `listen` (port 0 picks a free port) and serves the tunnel
    /// scenario for each of `unit_ids`.
    pub async fn start(listen: SocketAddr, unit_ids: &[u8]) -> Result<SimHandle, SimulatorError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| SimulatorError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimulatorError::Bind {
                addr: listen,
                source,
            })?;
        let units = unit_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let unit = Unit {
                    model: TunnelModel::new(i as f64 * 1.7),
                    frozen: HashMap::new(),
                    served: HashMap::new(),
                    holding: HashMap::new(),
                    input: HashMap::new(),
                    coils: HashMap::new(),
                    discrete: HashMap::new(),
                };
                (id, unit)
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            signals: tunnel_signals(),
            units,
        }));
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .refresh(0.0);

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let service = SimService {
            state: state.clone(),
        };
        let server = tokio::spawn(async move {
            let on_connected = |stream, peer| {
                let service = service.clone();
                async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(service.clone()))) }
            };
            let stopped = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = Server::new(listener)
                .serve_until(&on_connected, |_| {}, stopped)
                .await
            {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        let ticker_state = state.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                ticker_state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .refresh(TICK.as_secs_f64());
            }
        });
        tracing::info!(%addr, units = ?unit_ids, "modbus simulator listening");
        Ok(SimHandle {
            addr,
            state,
            stop: Some(stop_tx),
            server,
            ticker,
        })
    }
}

/// A running simulator. Dropping it stops it.
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    ticker: JoinHandle<()>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Freezes a signal of a unit at `value` (engineering units). Returns
    /// false if there is no such unit or signal.
    pub fn set(&self, unit: u8, signal: &str, value: f64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(s) = state.signals.iter().find(|s| s.name == signal).cloned() else {
            return false;
        };
        let Some(u) = state.units.get_mut(&unit) else {
            return false;
        };
        u.frozen.insert(s.name, value);
        let served = write_signal(u, &s, value);
        u.served.insert(s.name, served);
        true
    }

    /// Lets a frozen signal move again.
    pub fn unfreeze(&self, unit: u8, signal: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(u) = state.units.get_mut(&unit) {
            u.frozen.remove(signal);
        }
    }

    /// The value a signal is currently served with (engineering units).
    pub fn value(&self, unit: u8, signal: &str) -> Option<f64> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.units.get(&unit)?.served.get(signal).copied()
    }

    /// Stops serving: closes the listener and every open connection.
    pub async fn stop(mut self) {
        self.shutdown();
        let _ = (&mut self.server).await;
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.ticker.abort();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
        self.server.abort();
    }
}
