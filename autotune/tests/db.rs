//! The tuning database: records survive reopening, a torn last line (a run killed
//! mid-write) is cut off and reported, a corrupt line elsewhere is an error naming it, and
//! `best` picks the fastest correct record of the matching workload, target and compiler.

use tessera_autotune::db::{Outcome, Record, TuningDb};

fn rec(workload: &str, outcome: Outcome) -> Record {
    Record {
        workload: workload.into(),
        target: "znver5".into(),
        compiler: "0.1.0".into(),
        feature_version: 1,
        schedule: serde_json::json!({"mr": 6, "nr": 64}),
        outcome,
        features: None,
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tessera-db-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&d);
    d
}

#[test]
fn records_survive_reopening_and_best_is_the_fastest_correct() {
    let p = temp("reopen");
    let (mut db, rep) = TuningDb::open(&p).unwrap();
    assert_eq!(rep.records, 0);
    db.append(rec("w1", Outcome::Ok { median_ns: 900 }))
        .unwrap();
    db.append(rec(
        "w1",
        Outcome::Wrong {
            detail: "output 0 differs".into(),
        },
    ))
    .unwrap();
    db.append(rec("w1", Outcome::Ok { median_ns: 700 }))
        .unwrap();
    db.append(rec("w2", Outcome::Ok { median_ns: 100 }))
        .unwrap();
    db.append(rec("w1", Outcome::TimedOut { limit_ms: 2000 }))
        .unwrap();
    let (db, rep) = TuningDb::open(&p).unwrap();
    assert_eq!(rep.records, 5);
    assert_eq!(rep.torn_bytes, 0);
    let best = db.best("w1", "znver5", "0.1.0").unwrap();
    assert_eq!(best.outcome, Outcome::Ok { median_ns: 700 });
    assert!(db.best("w1", "znver4", "0.1.0").is_none());
    assert!(db.best("w3", "znver5", "0.1.0").is_none());
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_torn_last_line_is_cut_off_and_appending_goes_on() {
    let p = temp("torn");
    let (mut db, _) = TuningDb::open(&p).unwrap();
    db.append(rec("w1", Outcome::Ok { median_ns: 5 })).unwrap();
    let whole = std::fs::read(&p).unwrap();
    // A second record killed halfway through its write.
    let mut torn = whole.clone();
    torn.extend_from_slice(&whole[..whole.len() / 2]);
    std::fs::write(&p, &torn).unwrap();
    let (mut db, rep) = TuningDb::open(&p).unwrap();
    assert_eq!(rep.records, 1);
    assert_eq!(rep.torn_bytes, whole.len() / 2);
    assert_eq!(
        std::fs::read(&p).unwrap(),
        whole,
        "the torn line is cut off"
    );
    db.append(rec("w1", Outcome::Ok { median_ns: 3 })).unwrap();
    let (db, rep) = TuningDb::open(&p).unwrap();
    assert_eq!(rep.records, 2);
    assert_eq!(db.records()[1].outcome, Outcome::Ok { median_ns: 3 });
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn a_corrupt_line_is_an_error_naming_it_and_nothing_is_rewritten() {
    let p = temp("corrupt");
    let (mut db, _) = TuningDb::open(&p).unwrap();
    db.append(rec("w1", Outcome::Ok { median_ns: 5 })).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend_from_slice(b"{\"workload\": \"w2\", \"target\": 7}\n");
    std::fs::write(&p, &bytes).unwrap();
    let err = TuningDb::open(&p)
        .err()
        .expect("a corrupt line must not load")
        .to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(
        err.contains("target") || err.contains("invalid type"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&p).unwrap(),
        bytes,
        "the file is left as it was"
    );
    std::fs::remove_file(&p).unwrap();
}
