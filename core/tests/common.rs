//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use doorstep_core::*;

pub fn replica(dir: &tempfile::TempDir, name: &str, member: &str) -> Replica {
    Replica::open(dir.path().join(format!("{name}.sqlite3")), member, &format!("{name}-device")).unwrap()
}

pub fn new_household(member: &str) -> NewHousehold {
    NewHousehold {
        family_name: "王".into(),
        address: "桂城街道平洲路 1 号".into(),
        community_id: "c-平西".into(),
        branch_id: "b-一小".into(),
        guardians: vec![NewGuardian { name: "李芳".into(), relation: "母亲".into(), phone: "13800000000".into() }],
        students: vec![NewStudent {
            name: "王小明".into(),
            school: "桂城第一小学".into(),
            grade: "三年级".into(),
            hukou_status: HukouStatus::NonLocal,
        }],
        assigned_members: vec![member.into()],
        notes: "家长关心积分入学".into(),
    }
}

pub fn new_visit(household_id: &str, started_at_ms: i64, notes: &str) -> NewVisit {
    NewVisit {
        household_id: household_id.into(),
        visitors: vec![],
        started_at_ms,
        ended_at_ms: Some(started_at_ms + 30 * 60_000),
        mode: VisitMode::InPerson,
        people_met: vec!["母亲 李芳".into()],
        topics: vec![VisitTopic::EnrolmentPolicy, VisitTopic::FamilyEducation],
        notes: notes.into(),
        follow_up_on: Some("2026-12-15".into()),
        location: None,
    }
}

pub fn new_issue(household_id: &str) -> NewIssue {
    NewIssue {
        household_id: household_id.into(),
        visit_id: None,
        category: IssueCategory::Enrolment,
        title: "不清楚现场确认地点".into(),
        description: "家长不知道去哪个报名点现场确认".into(),
        urgency: Urgency::Normal,
        assignee: None,
        due_on: Some("2026-12-01".into()),
    }
}

/// Send everything `from` has that `to` lacks.
pub fn send(from: &Replica, to: &Replica) -> ImportReport {
    let changes = from.export_changes(&to.heads().unwrap()).unwrap();
    to.import_changes(&changes).unwrap()
}

/// Exchange both ways until neither lacks anything.
pub fn sync_pair(a: &Replica, b: &Replica) {
    send(a, b);
    send(b, a);
}
