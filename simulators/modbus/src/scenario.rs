//! The tunnel scenario: which signals a unit serves, where, how encoded, and
//! how they move. The register map is documented in `config/demo.toml`, and a
//! test keeps the two in agreement.

use adit_config::{DataType, Table, WordOrder};

/// How a signal's value evolves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SignalKind {
    /// CO in ppm: rises with traffic, noise ±1.5 ppm.
    Co,
    /// NO2 in ppm.
    No2,
    /// Visibility extinction coefficient K in 1/m.
    Visibility,
    /// Longitudinal air velocity in m/s; stronger with more fans running.
    AirVelocity,
    /// Air temperature in °C, slow drift.
    AirTemperature,
    /// Lighting level in cd/m².
    Lighting,
    /// Energy counter in kWh, only ever increases.
    Energy,
    /// Sump level in %, fills slowly, pumped out from 70 % down to 20 %.
    SumpLevel,
    /// Jet fan n (1-based) running: staged on by CO with hysteresis.
    FanRunning(u8),
    /// Sump pump running.
    PumpRunning,
    /// Emergency door open (rarely, for a few seconds).
    DoorOpen,
    /// Status word: bit 0 fan fault summary, bit 1 CO sensor in maintenance.
    StatusWord,
}

/// One served signal.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    pub name: &'static str,
    pub table: Table,
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    /// Engineering value = raw × scale.
    pub scale: f64,
    pub unit: &'static str,
    pub kind: SignalKind,
}

#[allow(clippy::too_many_arguments)] // a row constructor for the signal table below
const fn sig(
    name: &'static str,
    table: Table,
    address: u16,
    data_type: DataType,
    order: WordOrder,
    scale: f64,
    unit: &'static str,
    kind: SignalKind,
) -> Signal {
    Signal {
        name,
        table,
        address,
        data_type,
        order,
        scale,
        unit,
        kind,
    }
}

/// The signals every simulated unit serves.
pub fn tunnel_signals() -> Vec<Signal> {
    use DataType::{Bool, F32, I16, U16, U32};
    use Table::{Coil, DiscreteInput, HoldingRegister as H, InputRegister as I};
    use WordOrder::{Abcd, Cdab, Dcba};
    vec![
        sig("co_1", H, 0, F32, Abcd, 1.0, "ppm", SignalKind::Co),
        sig("co_2", H, 2, F32, Cdab, 1.0, "ppm", SignalKind::Co),
        sig("no2", H, 4, U16, Abcd, 0.01, "ppm", SignalKind::No2),
        sig(
            "visibility",
            H,
            5,
            U16,
            Abcd,
            0.00001,
            "1/m",
            SignalKind::Visibility,
        ),
        sig(
            "air_velocity",
            H,
            6,
            I16,
            Abcd,
            0.01,
            "m/s",
            SignalKind::AirVelocity,
        ),
        sig(
            "air_temperature",
            H,
            7,
            I16,
            Abcd,
            0.1,
            "°C",
            SignalKind::AirTemperature,
        ),
        sig("status", H, 10, U16, Abcd, 1.0, "", SignalKind::StatusWord),
        sig("energy", I, 0, U32, Abcd, 1.0, "kWh", SignalKind::Energy),
        sig(
            "sump_level",
            I,
            2,
            F32,
            Dcba,
            1.0,
            "%",
            SignalKind::SumpLevel,
        ),
        sig(
            "lighting",
            I,
            4,
            U16,
            Abcd,
            1.0,
            "cd/m2",
            SignalKind::Lighting,
        ),
        sig(
            "fan_1_running",
            Coil,
            0,
            Bool,
            Abcd,
            1.0,
            "",
            SignalKind::FanRunning(1),
        ),
        sig(
            "fan_2_running",
            Coil,
            1,
            Bool,
            Abcd,
            1.0,
            "",
            SignalKind::FanRunning(2),
        ),
        sig(
            "fan_3_running",
            Coil,
            2,
            Bool,
            Abcd,
            1.0,
            "",
            SignalKind::FanRunning(3),
        ),
        sig(
            "fan_4_running",
            Coil,
            3,
            Bool,
            Abcd,
            1.0,
            "",
            SignalKind::FanRunning(4),
        ),
        sig(
            "pump_running",
            Coil,
            4,
            Bool,
            Abcd,
            1.0,
            "",
            SignalKind::PumpRunning,
        ),
        sig(
            "door_1_open",
            DiscreteInput,
            0,
            Bool,
            Abcd,
            1.0,
            "",
            SignalKind::DoorOpen,
        ),
        sig(
            "door_2_open",
            DiscreteInput,
            1,
            Bool,
            Abcd,
            1.0,
            "",
            SignalKind::DoorOpen,
        ),
    ]
}

/// The physical state of one simulated bore, stepped forward in time.
#[derive(Clone, Debug)]
pub struct TunnelModel {
    /// Seconds since the simulation started.
    pub t: f64,
    /// Phase offset so that two bores do not move in lockstep.
    pub phase: f64,
    pub fans_running: [bool; 4],
    pub pump_running: bool,
    pub sump_level: f64,
    pub energy_kwh: f64,
    pub temperature: f64,
    pub doors_open: [f64; 2],
    co: f64,
}

impl TunnelModel {
    pub fn new(phase: f64) -> Self {
        Self {
            t: 0.0,
            phase,
            fans_running: [false; 4],
            pump_running: false,
            sump_level: 35.0 + 10.0 * phase.sin().abs(),
            energy_kwh: 120_000.0,
            temperature: 14.0,
            doors_open: [0.0; 2],
            co: 10.0,
        }
    }

    /// Traffic intensity 0..1 on a 10-minute cycle (fast enough to watch).
    pub fn traffic(&self) -> f64 {
        (0.5 + 0.45 * (std::f64::consts::TAU * self.t / 600.0 + self.phase).sin()).clamp(0.0, 1.0)
    }

    /// Advances the model by `dt` seconds.
    pub fn step(&mut self, dt: f64) {
        self.t += dt;
        let traffic = self.traffic();
        self.co = (6.0 + 55.0 * traffic + noise(1.5)).clamp(0.0, 300.0);
        for (i, running) in self.fans_running.iter_mut().enumerate() {
            let on_at = 25.0 + 8.0 * i as f64;
            if self.co > on_at {
                *running = true;
            } else if self.co < on_at - 6.0 {
                *running = false;
            }
        }
        let fans = self.fans_running.iter().filter(|r| **r).count() as f64;
        if self.sump_level >= 70.0 {
            self.pump_running = true;
        } else if self.sump_level <= 20.0 {
            self.pump_running = false;
        }
        self.sump_level += dt * if self.pump_running { -0.8 } else { 0.15 };
        self.sump_level = self.sump_level.clamp(0.0, 100.0);
        self.energy_kwh += dt * (5.0 + 30.0 * fans) / 3600.0;
        self.temperature += (14.0 + 6.0 * traffic - self.temperature) * (dt / 120.0) + noise(0.02);
        for door in &mut self.doors_open {
            *door = (*door - dt).max(0.0);
            if fastrand::f64() < dt / 900.0 {
                *door = 5.0;
            }
        }
    }

    /// The current engineering value of a signal.
    pub fn value(&self, signal: &Signal) -> f64 {
        let traffic = self.traffic();
        let fans = self.fans_running.iter().filter(|r| **r).count() as f64;
        match signal.kind {
            SignalKind::Co => (self.co + noise(0.8)).max(0.0),
            SignalKind::No2 => (0.05 + 0.75 * traffic + noise(0.02)).max(0.0),
            SignalKind::Visibility => (0.0008 + 0.0045 * traffic + noise(0.0001)).max(0.0),
            SignalKind::AirVelocity => 1.2 + 1.1 * fans + noise(0.25),
            SignalKind::AirTemperature => self.temperature,
            SignalKind::Lighting => 90.0 + 40.0 * (self.t / 300.0).sin() + noise(2.0),
            SignalKind::Energy => self.energy_kwh.floor(),
            SignalKind::SumpLevel => self.sump_level,
            SignalKind::FanRunning(n) => {
                f64::from(u8::from(self.fans_running[usize::from(n.clamp(1, 4)) - 1]))
            }
            SignalKind::PumpRunning => f64::from(u8::from(self.pump_running)),
            SignalKind::DoorOpen => {
                let i = usize::from(signal.address.min(1));
                f64::from(u8::from(self.doors_open[i] > 0.0))
            }
            SignalKind::StatusWord => 0.0,
        }
    }
}

/// Roughly normal noise with standard deviation `sd` (sum of uniforms).
fn noise(sd: f64) -> f64 {
    let s: f64 = (0..4).map(|_| fastrand::f64()).sum::<f64>() - 2.0;
    s * sd * 1.73
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_day_stays_within_tunnel_ranges() {
        let mut model = TunnelModel::new(0.3);
        let signals = tunnel_signals();
        let mut fan_changes = 0;
        let mut last_fan = false;
        let mut last_energy = 0.0;
        for _ in 0..(3600 * 2) {
            model.step(1.0);
            for s in &signals {
                let v = model.value(s);
                let ok = match s.kind {
                    SignalKind::Co => (0.0..=300.0).contains(&v),
                    SignalKind::No2 => (0.0..=5.0).contains(&v),
                    SignalKind::Visibility => (0.0..=0.015).contains(&v),
                    SignalKind::AirVelocity => (-10.0..=10.0).contains(&v),
                    SignalKind::AirTemperature => (-20.0..=60.0).contains(&v),
                    SignalKind::SumpLevel => (0.0..=100.0).contains(&v),
                    _ => true,
                };
                assert!(ok, "{} = {v}", s.name);
            }
            let energy = model.value(&signals[7]);
            assert!(energy >= last_energy, "energy counter went backwards");
            last_energy = energy;
            if model.fans_running[0] != last_fan {
                fan_changes += 1;
                last_fan = model.fans_running[0];
            }
        }
        assert!(fan_changes >= 2, "fans should follow the traffic cycle");
    }

    #[test]
    fn signals_do_not_overlap() {
        let signals = tunnel_signals();
        for a in &signals {
            for b in &signals {
                if a.name != b.name && a.table == b.table {
                    let (a0, a1) = (a.address, a.address + a.data_type.register_count());
                    let (b0, b1) = (b.address, b.address + b.data_type.register_count());
                    assert!(a1 <= b0 || b1 <= a0, "{} overlaps {}", a.name, b.name);
                }
            }
        }
    }
}
