//! Records visits into one replica file until it is killed.
//!
//! `visit_writer <replica.sqlite3>`: opens the replica (creating a household when the file
//! has none), prints `household <id>`, then records visits forever, printing
//! `visit <id>` (one line, flushed) only after `Replica::record_visit` returned `Ok`,
//! that is after the write's transaction committed. The crash-safety test kills it at a
//! random moment and checks that every printed visit survived.

use std::io::Write;
use std::process::ExitCode;

use doorstep_core::*;
use doorstep_tests::{CRASH_DEVICE, CRASH_MEMBER, HOUSEHOLD_PREFIX, VISIT_PREFIX};

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: visit_writer <replica.sqlite3>");
        return ExitCode::from(2);
    };
    match run(std::path::Path::new(&path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("visit_writer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let replica = Replica::open(path, CRASH_MEMBER, CRASH_DEVICE)?;
    let household_id = match replica.list_households()?.into_iter().next() {
        Some(h) => h.id,
        None => {
            replica
                .create_household(&NewHousehold {
                    family_name: "陈".into(),
                    address: "桂城街道南海大道北 38 号 2 座 1502".into(),
                    community_id: "c-桂城-东约".into(),
                    branch_id: "b-桂城一小".into(),
                    guardians: vec![NewGuardian {
                        name: "陈丽华".into(),
                        relation: "母亲".into(),
                        phone: "13926000000".into(),
                    }],
                    students: vec![NewStudent {
                        name: "陈思远".into(),
                        school: "桂城第一小学".into(),
                        grade: "四年级".into(),
                        hukou_status: HukouStatus::NonLocal,
                    }],
                    assigned_members: vec![CRASH_MEMBER.into()],
                    notes: "母亲在附近工厂上班，晚上七点后在家。".into(),
                })?
                .id
        }
    };
    let stdout = std::io::stdout();
    {
        let mut out = stdout.lock();
        writeln!(out, "{HOUSEHOLD_PREFIX}{household_id}")?;
        out.flush()?;
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    for n in 0u64.. {
        let visit = replica.record_visit(&NewVisit {
            household_id: household_id.clone(),
            visitors: vec![],
            started_at_ms: started + n as i64 * 60_000,
            ended_at_ms: Some(started + n as i64 * 60_000 + 40 * 60_000),
            mode: VisitMode::InPerson,
            people_met: vec!["母亲 陈丽华".into(), "学生 陈思远".into()],
            topics: vec![VisitTopic::EnrolmentPolicy, VisitTopic::StudentWellbeing],
            notes: format!("第 {n} 次走访。家长询问明年小升初积分入学的材料，已告知需准备居住证和社保证明。孩子近期学习状态良好。"),
            follow_up_on: Some("2026-12-15".into()),
            location: None,
        })?;
        // Printed only now: the visit's transaction has committed.
        let mut out = stdout.lock();
        writeln!(out, "{VISIT_PREFIX}{}", visit.id)?;
        out.flush()?;
    }
    Ok(())
}
