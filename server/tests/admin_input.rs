//! An admin's mistakes, on a real server: spreadsheets as Excel writes them (a cell with
//! a line break, a file saved in GBK, a misspelt column, the Chinese words for a
//! registration status) are imported or refused with the right line and nothing half
//! imported; the only admin cannot stop being one; `create-admin` does not take over a
//! member's id.

mod support;
use serde_json::{json, Value};
use support::*;

/// POST a spreadsheet; the status and the answer's text.
fn import(district: &District, csv: impl Into<Vec<u8>>) -> (u16, String) {
    let r = http()
        .post(format!("{}/v1/admin/households/import", district.server.url))
        .bearer_auth(&district.admin_token)
        .body(csv.into())
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn household_count(admin: &Admin) -> usize {
    admin.get_ok("/v1/households").as_array().unwrap().len()
}

#[test]
fn spreadsheets_as_excel_writes_them_are_imported_or_refused_by_line() {
    let district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1"]);
    let header = doorstep_server::admin::CSV_COLUMNS;

    // Line 2 holds a cell with a line break (lines 2–3); the bad row is line 4.
    let csv = format!("{header}\n王,\"平洲路1号\n3栋\",c1,b1,,,,,,,,m1\n李,路2,nowhere,b1,,,,,,,,m1\n");
    let (status, text) = import(&district, csv);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("line 4") && !text.contains("line 3"), "the line in the file: {text}");
    assert_eq!(household_count(&admin), 0, "nothing half imported");

    // Saved by a Chinese Excel as GBK ("王" is CD F5 there): told how to save it.
    let mut gbk = format!("{header}\n").into_bytes();
    gbk.extend([0xCD, 0xF5]);
    gbk.extend(b",road,c1,b1,,,,,,,,m1\n");
    let (status, text) = import(&district, gbk);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("CSV UTF-8") && text.contains("UTF-8 编码"), "{text}");

    // A misspelt column would have imported every household without it.
    let (status, text) = import(&district, "family_name,community_id,branch_id,assigned_member\n王,c1,b1,m1\n");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unknown column \\\"assigned_member\\\""), "{text}");

    // A registration status that is none of the four; details without the person.
    let (status, text) = import(
        &district,
        format!("{header}\n王,路1,c1,b1,,,,王小明,小学,一年级,外星,m1\n李,路2,c1,b1,,,13800000000,,,,,m1\n"),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("line 2") && text.contains("hukou_status"), "{text}");
    assert!(text.contains("line 3") && text.contains("guardian_phone without a guardian_name"), "{text}");
    let (status, text) = import(&district, format!("{header}\n"));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("no households"), "{text}");
    assert_eq!(household_count(&admin), 0);

    // What a district's spreadsheet holds: a BOM, CRLF line ends, Chinese statuses.
    let csv = format!(
        "\u{feff}{header}\r\n王,\"平洲路1号, 3栋\",c1,b1,王芳,母亲,13800000000,王小明,平洲小学,一年级,本地,m1\r\n\
         李,路2,c1,b1,,,,李小红,平洲小学,二年级,非本地,\r\n"
    );
    let (status, text) = import(&district, csv);
    assert_eq!(status, 200, "{text}");
    let imported: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(imported["imported"], 2);
    let phone = district.phone("m1", "m1");
    phone.sync(&district.server).unwrap();
    let wang = phone.replica.list_households().unwrap().into_iter().find(|h| h.family_name == "王").unwrap();
    let wang = phone.replica.household(&wang.id).unwrap();
    assert_eq!(wang.address, "平洲路1号, 3栋");
    assert_eq!(wang.students[0].hukou_status, doorstep_core::HukouStatus::Local);
    assert_eq!(wang.guardians[0].phone, "13800000000");
}

#[test]
fn the_only_admin_cannot_stop_being_one_and_create_admin_takes_no_members_id() {
    let mut district = District::start();
    let admin = district.admin();
    admin.branch_b1(&["c1"], &["m1"]);
    let demote = |id: &str| post(
        &format!("{}/v1/admin/members", district.server.url),
        &district.admin_token,
        json!({"id": id, "name": "管理员", "role": "member", "branch_id": "b1"}),
    );
    let (status, body) = demote("admin");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("only admin"), "{body}");
    assert_eq!(admin.get_ok("/v1/admin/organisation")["members"].as_array().unwrap().len(), 2, "still an admin");
    // With a second admin, the first may become a member.
    admin.ok("/v1/admin/members", json!({"id": "admin-2", "name": "第二位管理员", "role": "admin"}));
    let (status, body) = demote("admin");
    assert_eq!(status, 200, "{body}");

    drop(admin);
    district.server.kill();
    let (ok, _, err) = command(&["admin", "--data-dir", arg(&district.data), "create-admin", "m1", "张老师"]);
    assert!(!ok, "m1 is a member");
    assert!(err.contains("m1 is already a member"), "{err}");
    let (ok, out, err) = command(&["admin", "--data-dir", arg(&district.data), "create-admin", "admin-2", "第二位管理员"]);
    assert!(ok, "an admin gets another console token: {err}");
    let token = serde_json::from_str::<Value>(&out).unwrap()["token"].as_str().unwrap().to_string();
    district.server = Server::start(&district.data);
    let second = Admin { server: &district.server, token };
    let m1 = second.get_ok("/v1/admin/organisation")["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "m1")
        .cloned()
        .unwrap();
    assert_eq!((m1["role"].as_str(), m1["branch_id"].as_str()), (Some("member"), Some("b1")), "unchanged: {m1}");
}
