//! Admin actions, shared by the CLI subcommands and the JSON API: the organisation,
//! households (one by one or from a CSV file), assignments, devices, quarantine.

use doorstep_core::{HukouStatus, NewGuardian, NewHousehold, NewStudent};
use serde::{Deserialize, Serialize};

use crate::auth::{hash_secret, new_enrolment_code, new_token};
use crate::engine::{check_refs, now_ms, Engine};
use crate::error::{Result, ServerError};
use crate::org::{Branch, Community, Device, Member, Role};
use crate::store::{QuarantineStatus, QuarantinedChange, ServerStore, WriteTx};

/// How long an enrolment code stays valid.
pub const ENROLMENT_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

fn require(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(ServerError::BadRequest(format!("{field} 不能为空 / {field} must not be empty")));
    }
    Ok(())
}

/// The organisation as the store holds it: branches, communities and members, by id.
#[derive(Debug, Serialize)]
pub struct Organisation {
    pub branches: Vec<Branch>,
    pub communities: Vec<Community>,
    pub members: Vec<Member>,
}

pub fn organisation<S: ServerStore>(engine: &mut Engine<S>) -> Result<Organisation> {
    engine.write(|tx, _| Ok(Organisation { branches: tx.branches()?, communities: tx.communities()?, members: tx.members()? }))
}

pub fn add_branch<S: ServerStore>(engine: &mut Engine<S>, branch: &Branch) -> Result<()> {
    require("id", &branch.id)?;
    require("name", &branch.name)?;
    engine.write(|tx, _| tx.put_branch(branch))
}

pub fn add_community<S: ServerStore>(engine: &mut Engine<S>, community: &Community) -> Result<()> {
    require("id", &community.id)?;
    require("name", &community.name)?;
    engine.write(|tx, _| tx.put_community(community))
}

pub fn add_member<S: ServerStore>(engine: &mut Engine<S>, member: &Member) -> Result<()> {
    require("id", &member.id)?;
    require("name", &member.name)?;
    engine.write(|tx, _| {
        let branches: Vec<String> = tx.branches()?.into_iter().map(|b| b.id).collect();
        let communities: Vec<String> = tx.communities()?.into_iter().map(|c| c.id).collect();
        for b in member.branch_id.iter().chain(&member.scope_branches) {
            if !branches.contains(b) {
                return Err(ServerError::BadRequest(format!("未知的支部 / unknown branch {b}")));
            }
        }
        for c in &member.scope_communities {
            if !communities.contains(c) {
                return Err(ServerError::BadRequest(format!("未知的社区 / unknown community {c}")));
            }
        }
        // Without an admin, nobody could use the admin API any more.
        let admins: Vec<String> = tx.members()?.into_iter().filter(|m| m.role == Role::Admin).map(|m| m.id).collect();
        if member.role != Role::Admin && admins == [member.id.clone()] {
            return Err(ServerError::BadRequest(format!(
                "{} 是唯一的管理员，请先设置另一名管理员 / {} is the only admin: make another admin first",
                member.id, member.id
            )));
        }
        tx.put_member(member)
    })
}

fn check_household_refs(tx: &impl WriteTx, new: &NewHousehold) -> Result<()> {
    check_refs(tx, &new.branch_id, &new.community_id, &new.assigned_members)
}

pub fn create_household<S: ServerStore>(engine: &mut Engine<S>, by: &str, new: &NewHousehold) -> Result<String> {
    engine.write(|tx, docs| {
        check_household_refs(tx, new)?;
        Ok(docs.create(tx, by, new)?.id)
    })
}

/// One row of a household spreadsheet.
#[derive(Debug, Deserialize)]
struct CsvRow {
    family_name: String,
    #[serde(default)]
    address: String,
    community_id: String,
    branch_id: String,
    #[serde(default)]
    guardian_name: String,
    #[serde(default)]
    guardian_relation: String,
    #[serde(default)]
    guardian_phone: String,
    #[serde(default)]
    student_name: String,
    #[serde(default)]
    school: String,
    #[serde(default)]
    grade: String,
    #[serde(default)]
    hukou_status: String,
    /// Member ids separated by `;`.
    #[serde(default)]
    assigned_members: String,
}

/// The CSV columns, in the order of the template.
pub const CSV_COLUMNS: &str = "family_name,address,community_id,branch_id,guardian_name,guardian_relation,guardian_phone,student_name,school,grade,hukou_status,assigned_members";

/// The households' registration status as a spreadsheet may write it: the API's values,
/// or the Chinese words for them.
fn hukou_status(text: &str) -> Option<HukouStatus> {
    Some(match text {
        "" | "未知" | "不详" => HukouStatus::Unknown,
        "本地" | "户籍" => HukouStatus::Local,
        "非本地" | "非户籍" => HukouStatus::NonLocal,
        "政策照顾" | "政策性照顾" => HukouStatus::PolicyCare,
        _ => match HukouStatus::from(text) {
            HukouStatus::Other(_) => return None,
            known => known,
        },
    })
}

/// A row's household, or why the row cannot be imported.
fn household_of(r: CsvRow) -> std::result::Result<NewHousehold, String> {
    let Some(hukou) = hukou_status(&r.hukou_status) else {
        return Err(format!(
            "户籍状态“{}”应为 本地、非本地、政策照顾 或 未知 / hukou_status {:?} must be local, non_local, policy_care or unknown",
            r.hukou_status, r.hukou_status
        ));
    };
    if r.guardian_name.is_empty() && !(r.guardian_relation.is_empty() && r.guardian_phone.is_empty()) {
        return Err("有监护人关系或电话但没有监护人姓名 / guardian_relation or guardian_phone without a guardian_name".into());
    }
    if r.student_name.is_empty() && !(r.school.is_empty() && r.grade.is_empty() && r.hukou_status.is_empty()) {
        return Err("有学校、年级或户籍状态但没有学生姓名 / school, grade or hukou_status without a student_name".into());
    }
    Ok(NewHousehold {
        family_name: r.family_name,
        address: r.address,
        community_id: r.community_id,
        branch_id: r.branch_id,
        guardians: if r.guardian_name.is_empty() {
            vec![]
        } else {
            vec![NewGuardian { name: r.guardian_name, relation: r.guardian_relation, phone: r.guardian_phone }]
        },
        students: if r.student_name.is_empty() {
            vec![]
        } else {
            vec![NewStudent { name: r.student_name, school: r.school, grade: r.grade, hukou_status: hukou }]
        },
        assigned_members: r.assigned_members.split(';').map(str::trim).filter(|m| !m.is_empty()).map(str::to_string).collect(),
        notes: String::new(),
    })
}

/// Import households from CSV (UTF-8, with a header row naming columns of
/// [`CSV_COLUMNS`]). Every bad row is reported with its line in the file, and then
/// nothing is imported.
pub fn import_households_csv<S: ServerStore>(engine: &mut Engine<S>, by: &str, csv_bytes: &[u8]) -> Result<Vec<String>> {
    let bad = |what: String| ServerError::BadRequest(format!("导入失败，未导入任何住户 / nothing was imported: {what}"));
    if std::str::from_utf8(csv_bytes).is_err() {
        return Err(bad(
            "文件不是 UTF-8 编码，请在 Excel 中“另存为”选择“CSV UTF-8” / the file is not UTF-8: in Excel, \
             save it as \"CSV UTF-8\""
                .into(),
        ));
    }
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(csv_bytes);
    let headers = reader.headers().map_err(|e| bad(format!("标题行无法读取 / the header row cannot be read: {e}")))?.clone();
    let known: Vec<&str> = CSV_COLUMNS.split(',').collect();
    if let Some(unknown) = headers.iter().find(|h| !known.contains(h)) {
        return Err(bad(format!("未知的列“{unknown}”，可用的列：{CSV_COLUMNS} / unknown column {unknown:?}; the columns are {CSV_COLUMNS}")));
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for record in reader.records() {
        // The line the record starts on: a quoted cell may hold line breaks.
        let line = |position: Option<&csv::Position>| position.map_or(0, csv::Position::line);
        let (line, row) = match record {
            Ok(record) => (line(record.position()), record.deserialize::<CsvRow>(Some(&headers)).map_err(|e| e.to_string())),
            Err(e) => (line(e.position()), Err(e.to_string())),
        };
        match row.and_then(household_of) {
            Ok(new) => rows.push((line, new)),
            Err(e) => errors.push(format!("第 {line} 行 / line {line}: {e}")),
        }
    }
    if rows.is_empty() && errors.is_empty() {
        return Err(bad("文件中没有住户 / the file holds no households".into()));
    }
    let households = rows;
    engine.write(|tx, docs| {
        let mut ids = Vec::new();
        for (line, new) in &households {
            let created = check_household_refs(tx, new).and_then(|_| Ok(docs.create(tx, by, new)?.id));
            match created {
                Ok(id) => ids.push(id),
                Err(e) => errors.push(format!("第 {line} 行 / line {line}: {e}")),
            }
        }
        if !errors.is_empty() {
            // Returning an error rolls the whole transaction back: nothing is half-imported.
            return Err(ServerError::BadRequest(format!(
                "导入失败，未导入任何住户 / nothing was imported:\n{}",
                errors.join("\n")
            )));
        }
        Ok(ids)
    })
}

pub fn assign<S: ServerStore>(engine: &mut Engine<S>, by: &str, household_id: &str, member_id: &str, assigned: bool) -> Result<()> {
    engine.write(|tx, _| {
        tx.member(member_id)?.ok_or_else(|| ServerError::BadRequest(format!("未知的党员 / unknown member {member_id}")))?;
        Ok(())
    })?;
    engine.set_assignment(by, household_id, member_id, assigned)
}

/// A device registered for a member, with the one-time code the phone exchanges for a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Enrolment {
    pub device_id: String,
    pub enrolment_code: String,
    pub expires_at_ms: i64,
}

/// Register a phone for a member, under a new id, or under `device_id`: the id of a phone
/// this server does not know, which keeps it. That is a phone enrolled after the backup the
/// server was restored from: its replica belongs to that id, and what it recorded reaches
/// the server again only under it.
pub fn enrol_device<S: ServerStore>(
    engine: &mut Engine<S>,
    member_id: &str,
    label: &str,
    device_id: Option<&str>,
) -> Result<Enrolment> {
    let id = match device_id {
        Some(id) => uuid::Uuid::parse_str(id.trim())
            .map_err(|e| ServerError::BadRequest(format!("设备编号无效 / device id {id:?} is not a UUID: {e}")))?
            .to_string(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    let code = new_enrolment_code();
    let device = Device {
        id,
        member_id: member_id.to_string(),
        label: label.to_string(),
        enrolled: false,
        revoked: false,
    };
    let expires_at_ms = now_ms() + ENROLMENT_TTL_MS;
    engine.write(|tx, _| {
        tx.member(member_id)?.ok_or_else(|| ServerError::BadRequest(format!("未知的党员 / unknown member {member_id}")))?;
        if tx.device(&device.id)?.is_some() {
            let id = &device.id;
            return Err(ServerError::BadRequest(format!(
                "设备 {id} 已在本服务器登记；只有本服务器不认识的设备（如恢复备份之后）才能沿用原编号 / device {id} is known \
                 here; only a device this server does not know (after a restore) keeps its id"
            )));
        }
        tx.add_device(&device, &hash_secret(&code), expires_at_ms)
    })?;
    Ok(Enrolment { device_id: device.id, enrolment_code: code, expires_at_ms })
}

/// A phone's token, given once.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceToken {
    pub device_id: String,
    pub member_id: String,
    pub token: String,
}

pub fn exchange_code<S: ServerStore>(engine: &mut Engine<S>, code: &str) -> Result<DeviceToken> {
    let token = new_token();
    let device = engine.write(|tx, _| tx.enrol_device(&hash_secret(code), &hash_secret(&token), now_ms()))?;
    let device = device.ok_or_else(|| {
        ServerError::BadRequest("注册码无效、已使用或已过期 / the enrolment code is wrong, used or expired".into())
    })?;
    Ok(DeviceToken { device_id: device.id, member_id: device.member_id, token })
}

pub fn revoke_device<S: ServerStore>(engine: &mut Engine<S>, device_id: &str) -> Result<()> {
    if engine.write(|tx, _| tx.revoke_device(device_id, now_ms()))? {
        Ok(())
    } else {
        Err(ServerError::NotFound(format!("device {device_id} (or already revoked)")))
    }
}

/// Create an admin and a token for them at once (first start, or from the CLI).
pub fn create_admin<S: ServerStore>(engine: &mut Engine<S>, id: &str, name: &str) -> Result<DeviceToken> {
    let admin = Member {
        id: id.to_string(),
        name: name.to_string(),
        role: Role::Admin,
        branch_id: None,
        scope_branches: vec![],
        scope_communities: vec![],
    };
    // An existing admin gets one more console token (the last one lost); a member or a
    // coordinator is not made an admin this way.
    if let Some(existing) = engine.write(|tx, _| tx.member(id))?.filter(|m| m.role != Role::Admin) {
        return Err(ServerError::BadRequest(format!(
            "{id} 已是{}，请为管理员另选编号 / {id} is already a {}: choose another id for the admin",
            if existing.role == Role::Member { "党员" } else { "协调员" },
            existing.role.as_str()
        )));
    }
    add_member(engine, &admin)?;
    let enrolment = enrol_device(engine, id, "admin console", None)?;
    exchange_code(engine, &enrolment.enrolment_code)
}

/// Every device, or a member's (to find a lost phone to revoke: its label, whether it
/// was enrolled, whether it is revoked).
pub fn devices<S: ServerStore>(engine: &mut Engine<S>, member_id: Option<&str>) -> Result<Vec<Device>> {
    engine.write(|tx, _| tx.devices(member_id))
}

pub fn quarantined<S: ServerStore>(engine: &mut Engine<S>, status: Option<QuarantineStatus>) -> Result<Vec<QuarantinedChange>> {
    engine.write(|tx, _| tx.quarantined(status))
}
