//! Every scenario file in the repository's `scenarios/` parses and validates.

use std::path::PathBuf;

use bulk_population::{Arrival, PopulationModel, Scenario, Workload};

fn scenario_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

fn load(name: &str) -> Scenario {
    Scenario::load(scenario_dir().join(format!("{name}.toml"))).unwrap()
}

#[test]
fn every_scenario_file_parses() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenario_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let scenario = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                scenario.name,
                stem,
                "{}: name should match the file",
                path.display()
            );
            scenario.validate().unwrap();
            names.push(stem);
        }
    }
    names.sort();
    for expected in [
        "no-pipelining",
        "open-loop",
        "optin-heavy",
        "optout-heavy",
        "quick",
        "sessions-10k",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "scenarios/{expected}.toml missing"
        );
    }
}

#[test]
fn scenario_files_say_what_they_are_for() {
    for entry in std::fs::read_dir(scenario_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("# "),
                "{} lacks its top comment",
                path.display()
            );
        }
    }
}

#[test]
fn quick_is_sized_in_time_with_a_window_of_ten_seconds() {
    let quick = load("quick");
    assert_eq!(quick.arrival(), Arrival::Closed { concurrency: 50 });
    // Sized in time, so a faster machine measures more, not less: 12 s of sessions, the
    // first 2 s warm-up.
    let duration = quick.timed_duration().expect("quick is sized in time");
    let window = duration.as_secs_f64() - quick.workload.warmup_secs.get();
    assert!(window >= 10.0, "a window of {window} s");
    assert!(duration.as_secs_f64() <= 20.0, "ends well within 30 s");
}

#[test]
fn no_pipelining_replays_quick_without_pipelining() {
    let (quick, plain) = (load("quick"), load("no-pipelining"));
    assert_eq!(quick.population, plain.population);
    assert_eq!(quick.timed_duration(), plain.timed_duration());
    // Both draw the same pool of sessions by index.
    let a = Workload::generate(&quick, &PopulationModel::from_scenario(&quick));
    let b = Workload::generate(&plain, &PopulationModel::from_scenario(&plain));
    assert!(b.sessions.iter().all(|s| !s.pipelining));
    let strip = |w: &Workload| {
        w.sessions
            .iter()
            .map(|s| s.transactions.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
}

#[test]
fn special_scenarios_have_their_shape() {
    assert_eq!(
        load("sessions-10k").arrival(),
        Arrival::Closed {
            concurrency: 10_000
        }
    );
    let open = load("open-loop");
    assert_eq!(
        open.arrival(),
        Arrival::Open {
            rate_per_sec: 300.0,
            max_in_flight: 5000
        }
    );
    assert_eq!(open.session_count(), 9000);
}
