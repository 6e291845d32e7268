//! The simulator's servers (Modbus TCP, RTU over TCP, RTU on a pseudo
//! terminal) and the task that moves its values.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use adit_config::{DataType, Table};
use adit_modbus::codec::{encode_registers, RawValue};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use crate::faults::Faults;
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
    #[error("cannot create a pseudo terminal: {0}")]
    Pty(String),
}

/// Frame format on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Modbus TCP (MBAP header).
    Tcp,
    /// RTU frames (CRC, no MBAP) over TCP, like a transparent serial gateway.
    RtuOverTcp,
}

/// One simulated unit: its id, faults and signals frozen at known values.
#[derive(Clone, Debug, Default)]
pub struct UnitSpec {
    pub id: u8,
    pub faults: Faults,
    pub frozen: Vec<(String, f64)>,
    /// Extra holding registers at 1000.. whose values count up each tick
    /// (for load tests that need many points per device).
    pub bulk_registers: u16,
}

/// First address of the bulk block.
pub const BULK_START: u16 = 1000;

/// Holding registers 900..=901: the unit's real-time clock as Unix seconds,
/// u32 in ABCD order (as many PLCs expose it for time-stamping).
pub const CLOCK_ADDRESS: u16 = 900;

/// Holding registers 950..=951: a poll sequence number (u32, ABCD). Every
/// read that covers register 950 first counts up, then serves the count, so
/// the n-th read answers n: ground truth from outside adit for tests that
/// count what was served against what was stored (`SimHandle::sequence`).
pub const SEQUENCE_ADDRESS: u16 = 950;

impl UnitSpec {
    pub fn healthy(id: u8) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }
}

/// The registers and model of one unit id.
struct Unit {
    model: TunnelModel,
    bulk: u16,
    ticks: u16,
    started: std::time::Instant,
    faults: Faults,
    frozen: HashMap<&'static str, f64>,
    /// Engineering value of each signal as currently served (after quantization).
    served: HashMap<&'static str, f64>,
    /// Reads of [`SEQUENCE_ADDRESS`] so far (the last value served).
    sequence: u32,
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
            // The clock runs on even when the sensor values are stuck.
            write_clock(unit);
            if unit.faults.stuck {
                continue;
            }
            unit.model.step(dt);
            unit.ticks = unit.ticks.wrapping_add(1);
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

/// The raw value a broken 4-20 mA loop typically reads as.
fn sentinel(ty: DataType) -> RawValue {
    match ty {
        DataType::I16 | DataType::I32 | DataType::I64 => RawValue::Signed(-32768),
        DataType::F32 | DataType::F64 => RawValue::Float(-9999.0),
        _ => RawValue::Unsigned(65535),
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
            let is_float = matches!(s.data_type, DataType::F32 | DataType::F64);
            let (raw, served) = if unit.faults.nan && is_float {
                (RawValue::Float(f64::NAN), f64::NAN)
            } else if unit.faults.out_of_range {
                let raw = sentinel(s.data_type);
                let served = match raw {
                    RawValue::Signed(i) => i as f64 * s.scale,
                    RawValue::Unsigned(u) => u as f64 * s.scale,
                    RawValue::Float(f) => f,
                    RawValue::Bool(b) => f64::from(u8::from(b)),
                };
                (raw, served)
            } else if s.data_type == DataType::F32 {
                (RawValue::Float(value), f64::from(value as f32))
            } else if s.data_type == DataType::F64 {
                (RawValue::Float(value), value)
            } else {
                let raw = (value / s.scale).round();
                (RawValue::Signed(raw as i64), raw * s.scale)
            };
            let mut regs = [0u16; 4];
            let width = usize::from(s.data_type.register_count()).min(4);
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

/// Holding registers: the bulk block is computed on read (register
/// `BULK_START + i` holds `ticks + i`), so a load simulator with thousands of
/// registers per unit costs nothing between reads.
fn read_holding(unit: &mut Unit, start: u16, count: u16) -> Result<Vec<u16>, ExceptionCode> {
    let bulk = BULK_START..BULK_START.saturating_add(unit.bulk);
    if (start..start.saturating_add(count)).contains(&SEQUENCE_ADDRESS) {
        unit.sequence = unit.sequence.wrapping_add(1);
        let [hi, lo] = [(unit.sequence >> 16) as u16, unit.sequence as u16];
        unit.holding.insert(SEQUENCE_ADDRESS, hi);
        unit.holding.insert(SEQUENCE_ADDRESS + 1, lo);
    }
    (0..count)
        .map(|i| {
            let a = start
                .checked_add(i)
                .ok_or(ExceptionCode::IllegalDataAddress)?;
            if bulk.contains(&a) {
                Ok(unit.ticks.wrapping_add(a - BULK_START))
            } else {
                unit.holding
                    .get(&a)
                    .copied()
                    .ok_or(ExceptionCode::IllegalDataAddress)
            }
        })
        .collect()
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

type Answer = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

#[derive(Clone)]
struct SimService {
    state: Arc<Mutex<State>>,
    /// On a serial line a unit that does not exist stays silent; behind a TCP
    /// gateway it is reported with exception 11.
    silent_unknown_units: bool,
}

impl SimService {
    /// The shortest `disconnect_every` of any unit.
    fn disconnect_every(&self) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .units
            .values()
            .filter_map(|u| u.faults.disconnect_every)
            .min()
    }

    fn answer(
        &self,
        req: &SlaveRequest<'static>,
    ) -> (Result<Option<Response>, ExceptionCode>, Option<Duration>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(unit) = state.units.get_mut(&req.slave) else {
            return if self.silent_unknown_units {
                (Ok(None), None)
            } else {
                (Err(ExceptionCode::GatewayTargetDevice), None)
            };
        };
        let f = unit.faults.clone();
        if f.no_answer {
            return (Ok(None), None);
        }
        let count = match req.request {
            Request::ReadHoldingRegisters(_, n)
            | Request::ReadInputRegisters(_, n)
            | Request::ReadCoils(_, n)
            | Request::ReadDiscreteInputs(_, n) => n,
            _ => 0,
        };
        let result = if let Some(code) = f.exception {
            Err(ExceptionCode::new(code))
        } else if f.max_registers.is_some_and(|max| count > max) {
            Err(ExceptionCode::IllegalDataValue)
        } else {
            match req.request {
                Request::ReadHoldingRegisters(a, n) => {
                    read_holding(unit, a, n).map(Response::ReadHoldingRegisters)
                }
                Request::ReadInputRegisters(a, n) => {
                    read_range(&unit.input, a, n).map(Response::ReadInputRegisters)
                }
                Request::ReadCoils(a, n) => read_range(&unit.coils, a, n).map(Response::ReadCoils),
                Request::ReadDiscreteInputs(a, n) => {
                    read_range(&unit.discrete, a, n).map(Response::ReadDiscreteInputs)
                }
                _ => Err(ExceptionCode::IllegalFunction),
            }
        };
        (result.map(Some), f.delay)
    }
}

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Answer;

    fn call(&self, req: Self::Request) -> Self::Future {
        let (result, delay) = self.answer(&req);
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            result
        })
    }
}

fn new_unit(spec: &UnitSpec, index: usize) -> Unit {
    let bulk = spec.bulk_registers.min(u16::MAX - BULK_START);
    Unit {
        model: TunnelModel::new(index as f64 * 1.7),
        bulk,
        ticks: 0,
        started: std::time::Instant::now(),
        faults: spec.faults.clone(),
        frozen: HashMap::new(),
        served: HashMap::new(),
        sequence: 0,
        holding: HashMap::new(),
        input: HashMap::new(),
        coils: HashMap::new(),
        discrete: HashMap::new(),
    }
}

/// Serves the unit's clock: wall time, or, after an RTC reset (the
/// `clock_reset` fault), seconds since the simulator started, i.e. 1970.
fn write_clock(unit: &mut Unit) {
    let seconds = if unit.faults.clock_reset {
        unit.started.elapsed().as_secs()
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let [a, b, c, d] = u32::try_from(seconds).unwrap_or(u32::MAX).to_be_bytes();
    unit.holding
        .insert(CLOCK_ADDRESS, u16::from_be_bytes([a, b]));
    unit.holding
        .insert(CLOCK_ADDRESS + 1, u16::from_be_bytes([c, d]));
}

fn new_state(units: &[UnitSpec]) -> Arc<Mutex<State>> {
    let signals = tunnel_signals();
    let mut map = BTreeMap::new();
    for (i, spec) in units.iter().enumerate() {
        let mut unit = new_unit(spec, i);
        write_clock(&mut unit);
        for (name, value) in &spec.frozen {
            if let Some(s) = signals.iter().find(|s| s.name == name) {
                unit.frozen.insert(s.name, *value);
            }
        }
        map.insert(spec.id, unit);
    }
    let mut state = State {
        signals,
        units: map,
    };
    // Stuck units still need one set of values to be stuck at.
    for unit in state.units.values_mut() {
        let stuck = std::mem::take(&mut unit.faults.stuck);
        for s in &state.signals {
            let value = unit
                .frozen
                .get(s.name)
                .copied()
                .unwrap_or_else(|| unit.model.value(s));
            let served = write_signal(unit, s, value);
            unit.served.insert(s.name, served);
        }
        unit.faults.stuck = stuck;
    }
    Arc::new(Mutex::new(state))
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Modbus TCP on `listen` (port 0 picks a free port), a healthy tunnel
    /// bore for each of `unit_ids`.
    pub async fn start(listen: SocketAddr, unit_ids: &[u8]) -> Result<SimHandle, SimulatorError> {
        let units: Vec<UnitSpec> = unit_ids.iter().map(|&id| UnitSpec::healthy(id)).collect();
        Self::start_tcp(listen, Framing::Tcp, &units).await
    }

    /// A TCP server with the given framing and units.
    pub async fn start_tcp(
        listen: SocketAddr,
        framing: Framing,
        units: &[UnitSpec],
    ) -> Result<SimHandle, SimulatorError> {
        let bind_err = |source| SimulatorError::Bind {
            addr: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let listener = listener.into_std().map_err(bind_err)?;
        let state = new_state(units);
        let service = SimService {
            state: state.clone(),
            silent_unknown_units: false,
        };
        let server = spawn_tcp_server(&listener, framing, service.clone()).map_err(bind_err)?;
        tracing::info!(%addr, ?framing, units = ?units.iter().map(|u| u.id).collect::<Vec<_>>(), "modbus simulator listening");
        Ok(SimHandle::new(
            state,
            Some(addr),
            Some((listener, framing, service)),
            server,
        ))
    }

    /// Modbus RTU on a new pseudo-terminal pair: the simulator holds one end
    /// and returns the path of the other, for a collector to open as its
    /// serial port. Units that are not configured stay silent, as on a real
    /// RS-485 line.
    #[cfg(unix)]
    pub fn start_rtu_pty(units: &[UnitSpec]) -> Result<(SimHandle, String), SimulatorError> {
        let (master, slave) =
            tokio_serial::SerialStream::pair().map_err(|e| SimulatorError::Pty(e.to_string()))?;
        let path = tty_path(&slave)?;
        // The collector opens the path itself. Keep a plain handle of that end
        // open: when no slave fd is open, reads on the master fail with EIO
        // and the pseudo terminal disappears between the collector's
        // reconnects. The serial handle from `pair()` holds an exclusive
        // lock, so it is closed once the plain one is open.
        let keepalive = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| SimulatorError::Pty(format!("cannot open {path}: {e}")))?;
        drop(slave);
        let state = new_state(units);
        let service = SimService {
            state: state.clone(),
            silent_unknown_units: true,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = tokio_modbus::server::rtu::Server::new(master)
                .serve_until(service, stopped)
                .await
            {
                tracing::warn!(error = %e, "rtu simulator stopped");
            }
        });
        tracing::info!(%path, units = ?units.iter().map(|u| u.id).collect::<Vec<_>>(), "modbus rtu simulator on a pseudo terminal");
        let mut handle = SimHandle::new(
            state,
            None,
            None,
            ServerTask {
                task: server,
                stop: Some(stop_tx),
            },
        );
        handle.pty_path = Some(path.clone());
        handle.pty_keepalive = Some(keepalive);
        Ok((handle, path))
    }
}

#[cfg(unix)]
fn tty_path(slave: &tokio_serial::SerialStream) -> Result<String, SimulatorError> {
    use std::os::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", slave.as_raw_fd());
    std::fs::read_link(&link)
        .map(|p| p.display().to_string())
        .map_err(|e| SimulatorError::Pty(format!("cannot find the pty's name: {e}")))
}

struct ServerTask {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

fn spawn_tcp_server(
    listener: &std::net::TcpListener,
    framing: Framing,
    service: SimService,
) -> std::io::Result<ServerTask> {
    let listener = listener.try_clone()?;
    let disconnect_every = service.disconnect_every();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Each round serves until stopped, or until the disconnect period
        // ends: dropping the serve future cancels every connection task,
        // while the listening socket stays open for the next round.
        loop {
            let round_listener = match listener.try_clone().and_then(TcpListener::from_std) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "simulator cannot listen again");
                    return;
                }
            };
            let period = async {
                match disconnect_every {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let service = service.clone();
            let serve = async move {
                match framing {
                    Framing::Tcp => {
                        let on_connected = |stream, peer| {
                            let service = service.clone();
                            async move {
                                tokio_modbus::server::tcp::accept_tcp_connection(
                                    stream,
                                    peer,
                                    move |_| Ok(Some(service.clone())),
                                )
                            }
                        };
                        tokio_modbus::server::tcp::Server::new(round_listener)
                            .serve(&on_connected, |_| {})
                            .await
                    }
                    Framing::RtuOverTcp => {
                        let on_connected = |stream, peer| {
                            let service = service.clone();
                            async move {
                                tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(
                                    stream,
                                    peer,
                                    move |_| Ok(Some(service.clone())),
                                )
                            }
                        };
                        tokio_modbus::server::rtu_over_tcp::Server::new(round_listener)
                            .serve(&on_connected, |_| {})
                            .await
                    }
                }
            };
            tokio::select! {
                result = serve => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "simulator server stopped");
                    }
                    return;
                }
                _ = &mut stop_rx => return,
                () = period => tracing::info!("simulator dropping every connection (disconnect_every fault)"),
            }
        }
    });
    Ok(ServerTask {
        task,
        stop: Some(stop_tx),
    })
}

/// A running simulator. Dropping it stops it.
pub struct SimHandle {
    addr: Option<SocketAddr>,
    pty_path: Option<String>,
    /// Our open handle of the pty end the collector uses (RTU only).
    pty_keepalive: Option<std::fs::File>,
    state: Arc<Mutex<State>>,
    /// What is needed to restart the TCP server on the same socket.
    tcp: Option<(std::net::TcpListener, Framing, SimService)>,
    server: ServerTask,
    ticker: JoinHandle<()>,
}

impl SimHandle {
    fn new(
        state: Arc<Mutex<State>>,
        addr: Option<SocketAddr>,
        tcp: Option<(std::net::TcpListener, Framing, SimService)>,
        server: ServerTask,
    ) -> Self {
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
        Self {
            addr,
            pty_path: None,
            pty_keepalive: None,
            state,
            tcp,
            server,
            ticker,
        }
    }

    /// The TCP address (TCP framings only).
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The pseudo terminal a collector should open (RTU only).
    pub fn pty_path(&self) -> Option<&str> {
        self.pty_path.as_deref()
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

    /// Replaces a unit's faults; returns false if there is no such unit.
    pub fn set_faults(&self, unit: u8, faults: Faults) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.units.get_mut(&unit) {
            Some(u) => {
                u.faults = faults;
                true
            }
            None => false,
        }
    }

    /// How many reads of the poll sequence register (see
    /// [`SEQUENCE_ADDRESS`]) a unit has answered: the last value served.
    pub fn sequence(&self, unit: u8) -> Option<u32> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Some(state.units.get(&unit)?.sequence)
    }

    /// The value a signal is currently served with (engineering units).
    pub fn value(&self, unit: u8, signal: &str) -> Option<f64> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.units.get(&unit)?.served.get(signal).copied()
    }

    /// Closes every open connection (the listener stays open), as a gateway
    /// or PLC that resets its sockets does.
    pub async fn drop_connections(&mut self) {
        let Some((listener, framing, service)) = &self.tcp else {
            return;
        };
        if let Some(stop) = self.server.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.server.task).await;
        match spawn_tcp_server(listener, *framing, service.clone()) {
            Ok(server) => self.server = server,
            Err(e) => {
                tracing::error!(error = %e, "simulator cannot serve again after dropping connections");
            }
        }
    }

    /// Stops serving: closes the listener and every open connection.
    pub async fn stop(mut self) {
        self.shutdown();
        let _ = (&mut self.server.task).await;
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.server.stop.take() {
            let _ = stop.send(());
        }
        self.tcp = None;
        self.ticker.abort();
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
        self.server.task.abort();
    }
}
