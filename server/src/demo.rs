//! `serve --demo`: a small demo district, so a newcomer sees merged data at once.
//!
//! Seeded only into an empty store. Prints an admin token, a coordinator token and one
//! enrolment code per member; `serve` then prints a command to try, with its address.

use doorstep_core::document::Author;
use doorstep_core::*;

use crate::admin;
use crate::engine::Engine;
use crate::error::Result;
use crate::org::{Branch, Community, Member, Role};
use crate::store::{ServerStore, WriteTx};

const BRANCHES: &[(&str, &str)] = &[("b-gc1", "桂城第一小学党支部"), ("b-gc2", "桂城中心幼儿园党支部"), ("b-pz", "平洲中学党支部")];
const COMMUNITIES: &[(&str, &str)] = &[("c-pingxi", "平西社区"), ("c-xiabei", "夏北社区"), ("c-dongdong", "东东社区")];
const FAMILIES: &[&str] = &["王", "李", "张", "陈", "黄", "梁", "何", "罗", "郭", "林", "周", "吴"];

/// Seed the demo district into an empty store: the coordinator's token, or `None` if the
/// store had data (then nothing is seeded).
pub fn seed<S: ServerStore>(engine: &mut Engine<S>) -> Result<Option<String>> {
    if !engine.write(|tx, _| Ok(tx.branches()?.is_empty()))? {
        println!("demo: the store already has data; not seeding");
        return Ok(None);
    }
    for (id, name) in BRANCHES {
        admin::add_branch(engine, &Branch { id: id.to_string(), name: name.to_string() })?;
    }
    for (id, name) in COMMUNITIES {
        admin::add_community(engine, &Community { id: id.to_string(), name: name.to_string() })?;
    }
    let admin_token = admin::create_admin(engine, "admin", "教育党委管理员")?;
    let coordinator = Member {
        id: "coord-gc1".into(),
        name: "陈书记".into(),
        role: Role::Coordinator,
        branch_id: Some("b-gc1".into()),
        scope_branches: vec!["b-gc1".into(), "b-gc2".into()],
        scope_communities: vec![],
    };
    admin::add_member(engine, &coordinator)?;
    let coordinator_enrolment = admin::enrol_device(engine, &coordinator.id, "demo", None)?;
    let coordinator_token = admin::exchange_code(engine, &coordinator_enrolment.enrolment_code)?;
    let mut codes = Vec::new();
    for i in 0..6 {
        let branch = BRANCHES[i % BRANCHES.len()].0;
        let member = Member {
            id: format!("m-{:02}", i + 1),
            name: format!("党员{}", i + 1),
            role: Role::Member,
            branch_id: Some(branch.into()),
            scope_branches: vec![],
            scope_communities: vec![],
        };
        admin::add_member(engine, &member)?;
        codes.push((member.id.clone(), admin::enrol_device(engine, &member.id, "demo phone", None)?.enrolment_code));
        for j in 0..2 {
            let n = i * 2 + j;
            let new = NewHousehold {
                family_name: FAMILIES[n % FAMILIES.len()].into(),
                address: format!("桂城街道南海大道{}号", 10 + n),
                community_id: COMMUNITIES[n % COMMUNITIES.len()].0.into(),
                branch_id: branch.into(),
                guardians: vec![NewGuardian { name: format!("{}家长", FAMILIES[n % FAMILIES.len()]), relation: "母亲".into(), phone: format!("1380000{:04}", n) }],
                students: vec![NewStudent { name: format!("{}同学", FAMILIES[n % FAMILIES.len()]), school: "桂城第一小学".into(), grade: "五年级".into(), hukou_status: if n % 2 == 0 { HukouStatus::Local } else { HukouStatus::NonLocal } }],
                assigned_members: vec![member.id.clone()],
                notes: String::new(),
            };
            let household = admin::create_household(engine, "admin", &new)?;
            let by = Author { member_id: member.id.clone(), device_id: "demo".into() };
            engine.edit(&by, &household, |doc, a, now| {
                let started = now - (n as i64 + 1) * 86_400_000;
                let visit = doc.record_visit(a, now, &NewVisit {
                    household_id: household.clone(),
                    visitors: vec![],
                    started_at_ms: started,
                    ended_at_ms: Some(started + 45 * 60_000),
                    mode: VisitMode::InPerson,
                    people_met: vec!["母亲".into(), "学生".into()],
                    topics: vec![VisitTopic::EnrolmentPolicy, VisitTopic::FamilyEducation],
                    notes: "讲解了公办学校招生方案：网上报名后到报名点现场确认。家长关心积分入学。".into(),
                    follow_up_on: Some("2026-12-20".into()),
                    location: None,
                })?;
                if n % 3 == 0 {
                    doc.raise_issue(a, now, &NewIssue {
                        household_id: household.clone(),
                        visit_id: Some(visit),
                        category: IssueCategory::Enrolment,
                        title: "不清楚现场确认需要带哪些材料".into(),
                        description: "家长希望提前知道户口本、居住证等材料要求。".into(),
                        urgency: Urgency::Normal,
                        assignee: None,
                        due_on: Some(if n % 2 == 0 { "2026-11-20" } else { "2027-01-15" }.into()),
                    })?;
                }
                Ok(())
            })?;
        }
    }
    println!("demo district seeded: {} branches, {} communities, 6 members, 12 households", BRANCHES.len(), COMMUNITIES.len());
    println!("  admin token:       {}", admin_token.token);
    println!("  coordinator token: {}  (陈书记, branches b-gc1, b-gc2)", coordinator_token.token);
    for (member, code) in codes {
        println!("  enrolment code for {member}: {code}");
    }
    Ok(Some(coordinator_token.token))
}
