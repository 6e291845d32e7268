//! `adit demo`'s scripted faults, so that the page and the watchdog show
//! what they are for within the first minutes: a cycle of
//! [`CYCLE`] seconds over the Modbus simulator — a CO rise in bore B (the
//! `CoCongested` rule fires), bore A's values freezing (`CoSensorStuck`),
//! bore B's PLC going silent (`DeviceDown`, its points bad with last values
//! kept) — each followed by recovery. [`step_at`] is pure; [`Script`]
//! applies its changes to the simulator.

use std::time::Duration;

use adit_sim_modbus::{Faults, SimHandle};

/// Length of one fault cycle, seconds.
pub const CYCLE: u64 = 150;
/// Unit ids of the demo's two PLCs.
const BORE_A: u8 = 1;
const BORE_B: u8 = 2;

/// What the simulator does at one moment of the cycle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    Healthy,
    /// Bore B's CO station 1 reads this many ppm.
    CoRise(f64),
    /// Bore A's values freeze.
    BoreAStuck,
    /// Bore B's PLC answers nothing.
    BoreBSilent,
}

impl Step {
    /// One line for the demo's output when this step begins.
    pub fn announce(self) -> &'static str {
        match self {
            Step::Healthy => "demo fault: none — every device healthy again",
            Step::CoRise(_) => {
                "demo fault: CO rising in bore B (bore_b.co_1) — CoCongested fires above 70 ppm after 10 s"
            }
            Step::BoreAStuck => {
                "demo fault: bore A's values freeze — CoSensorStuck fires after 30 identical samples"
            }
            Step::BoreBSilent => {
                "demo fault: bore B's PLC stops answering — its points turn BAD with last values kept, DeviceDown after 5 s"
            }
        }
    }

    fn same_kind(self, other: Step) -> bool {
        std::mem::discriminant(&self) == std::mem::discriminant(&other)
    }
}

/// The step at `elapsed` since the demo started (pure).
pub fn step_at(elapsed: Duration) -> Step {
    let t = elapsed.as_secs() % CYCLE;
    match t {
        30..=49 => {
            // 20 ppm → 120 ppm over 20 s, then held.
            #[allow(clippy::cast_precision_loss)]
            Step::CoRise(20.0 + 5.0 * (t - 30) as f64)
        }
        50..=69 => Step::CoRise(120.0),
        75..=109 => Step::BoreAStuck,
        110..=139 => Step::BoreBSilent,
        _ => Step::Healthy,
    }
}

/// Applies the script to a running simulator, one tick at a time.
#[derive(Debug)]
pub struct Script {
    current: Step,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            current: Step::Healthy,
        }
    }
}

impl Script {
    /// Moves the simulator to the step of `elapsed`; returns the
    /// announcement when a new kind of step began.
    pub fn tick(&mut self, sim: &SimHandle, elapsed: Duration) -> Option<&'static str> {
        let next = step_at(elapsed);
        if next == self.current {
            return None;
        }
        let began = !next.same_kind(self.current);
        if began {
            // Undo the previous step.
            match self.current {
                Step::Healthy => {}
                Step::CoRise(_) => sim.unfreeze(BORE_B, "co_1"),
                Step::BoreAStuck => {
                    sim.set_faults(BORE_A, Faults::default());
                }
                Step::BoreBSilent => {
                    sim.set_faults(BORE_B, Faults::default());
                }
            }
        }
        match next {
            Step::Healthy => {}
            Step::CoRise(ppm) => {
                sim.set(BORE_B, "co_1", ppm);
            }
            Step::BoreAStuck => {
                sim.set_faults(
                    BORE_A,
                    Faults {
                        stuck: true,
                        ..Faults::default()
                    },
                );
            }
            Step::BoreBSilent => {
                sim.set_faults(
                    BORE_B,
                    Faults {
                        no_answer: true,
                        ..Faults::default()
                    },
                );
            }
        }
        self.current = next;
        began.then(|| next.announce())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Step {
        step_at(Duration::from_secs(s))
    }

    #[test]
    fn the_cycle_shows_each_fault_then_recovers() {
        let table = [
            (0, Step::Healthy),
            (29, Step::Healthy),
            (30, Step::CoRise(20.0)),
            (40, Step::CoRise(70.0)),
            (49, Step::CoRise(115.0)),
            (60, Step::CoRise(120.0)),
            (70, Step::Healthy),
            (75, Step::BoreAStuck),
            (109, Step::BoreAStuck),
            (110, Step::BoreBSilent),
            (139, Step::BoreBSilent),
            (140, Step::Healthy),
            (CYCLE + 30, Step::CoRise(20.0)),
        ];
        for (s, want) in table {
            assert_eq!(at(s), want, "at {s} s");
        }
    }

    #[test]
    fn faults_last_long_enough_for_the_demo_rules_to_fire() {
        // CoCongested: above 70 for 10 s; CoSensorStuck: 30 samples at 1 s;
        // DeviceDown: 5 s.
        let above_70 = (0..CYCLE)
            .filter(|&s| matches!(at(s), Step::CoRise(p) if p > 70.0))
            .count();
        let stuck = (0..CYCLE).filter(|&s| at(s) == Step::BoreAStuck).count();
        let silent = (0..CYCLE).filter(|&s| at(s) == Step::BoreBSilent).count();
        assert!(above_70 >= 20, "{above_70}");
        assert!(stuck >= 33, "{stuck}");
        assert!(silent >= 15, "{silent}");
    }
}
