//! A realistic district to benchmark with: the households of 桂城街道 (family names,
//! addresses, students and their schools), visits with notes as members write them, and the
//! problems families raise. Deterministic: everything is drawn from the `StdRng` the caller
//! seeds. Used by the replica bench (`tests/benches/replica.rs`) and the sync bench
//! (`server/benches/sync_compare.rs`).

use doorstep_core::{
    Household, IssueCategory, IssueStatus, Location, NewIssue, NewVisit, Urgency, VisitMode, VisitTopic,
};
use rand::prelude::*;

/// 2025-09-01T08:00:00+08:00: the start of the school year.
pub const SCHOOL_YEAR_START_MS: i64 = 1_756_684_800_000;
pub const DAY_MS: i64 = 86_400_000;

pub const FAMILY_NAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "林",
    "罗", "高", "梁", "郑", "谢", "宋", "唐", "许", "邓", "冯", "韩", "曹", "曾", "彭", "蔡", "潘", "田", "董",
    "袁", "叶", "蒋", "杜", "苏", "魏", "程", "吕", "丁", "沈", "卢", "钟", "谭", "廖", "区", "麦", "冼", "关",
    "欧阳", "司徒",
];
pub const GIVEN_ADULT: &[&str] = &[
    "丽华", "秀英", "小燕", "晓红", "美玲", "海燕", "雪梅", "婉婷", "慧敏", "玉兰", "桂芳", "嘉欣", "淑贞", "建国",
    "志强", "国华", "伟明", "文杰", "永康", "德华", "振宇", "锦荣", "家豪", "少峰", "俊杰", "炳坤", "晓云", "红梅",
];
pub const GIVEN_CHILD: &[&str] = &[
    "思远", "子轩", "梓涵", "雨桐", "浩然", "欣怡", "宇航", "诗琪", "一诺", "俊熙", "可馨", "皓轩", "语嫣", "锦程",
    "沐阳", "乐瑶", "梓睿", "若汐", "嘉懿", "子墨",
];
pub const PLACES: &[&str] = &[
    "桂城", "平洲", "夏东", "叠滘", "灯湖", "南约", "石肯", "大沥", "罗村", "九江", "西樵", "丹灶", "狮山", "里水",
    "映月", "文翰", "宝翠", "海五",
];
pub const SCHOOL_KINDS: &[&str] = &["第一小学", "第二小学", "中心小学", "实验学校", "中学", "幼儿园", "外国语学校"];
pub const COMMUNITY_KINDS: &[&str] = &["东社区", "西社区", "南社区", "北社区", "新村社区", "社区"];
const ROADS: &[&str] = &[
    "南海大道北", "桂澜北路", "海八路", "灯湖东路", "南桂东路", "季华东路", "天佑三路", "文华北路", "宝石东路",
    "平洲永安路", "夏北路", "叠滘大道", "简平路", "南约路", "东平路",
];
const ESTATES: &[&str] = &[
    "怡翠玫瑰园", "海逸桃花园", "中海锦城", "保利花园", "万科金色家园", "桂花苑", "南约新村", "平西村", "夏东村",
    "叠南小区", "金桂花园", "翠湖绿洲",
];
pub const GRADES: &[&str] =
    &["幼儿园中班", "幼儿园大班", "一年级", "二年级", "三年级", "四年级", "五年级", "六年级", "初一", "初二", "初三"];

/// Sentence templates for visit notes; `{slot}`s are filled from the pools in `slot`.
const NOTE_TEMPLATES: &[&str] = &[
    "{child}最近学习状态{state}，{subject}成绩比上学期{trend}。",
    "{rel}询问{policy}，已告知需要准备{material}，并提醒在{month}月{day}日前到{office}办理。",
    "{rel}反映孩子每天玩手机{hours}个小时左右，建议家长和孩子约定使用时间并以身作则。",
    "父亲在{city}务工，平时由{carer}照看，{carer}不太会用微信，通知需要电话告知。",
    "家长对{school}的课后服务{satisfaction}，希望增加{club}。",
    "孩子有{condition}，已提醒家长把情况告诉{teacher}和校医。",
    "家长关心上学路上{road}路口的交通安全，希望放学时段有人值守。",
    "家里{moved}，离学校约{km}公里，孩子每天{commute}上学，单程约{minutes}分钟。",
    "与{child}单独聊了{minutes2}分钟，孩子说和同学相处{peer}，最喜欢{subject}课。",
    "{rel}表示家庭经济压力较大，{hardship}，已介绍社区的{help}申请渠道。",
    "向家长宣传了{lecture}，{weekday}{time}在{venue}举办，家长表示{attend}。",
    "孩子的{sibling}明年上{level}，家长想了解{level}学位申请的时间和条件。",
    "家长对学校食堂{food}有意见，已记录并答应向{school}反映。",
    "本次走访时孩子在{activity}，只与{rel}交谈，约定{next}再来。",
    "家长希望多了解孩子在校表现，已把{teacher}的联系方式告诉家长。",
    "{elder}身体不好，家里需要人照顾，孩子放学后要帮忙{chore}。",
    "孩子读{grade}，这学期{achievement}，家长很高兴。",
    "{rel}说孩子晚上经常{sleep}，白天上课容易犯困，建议调整作息。",
    "家长咨询{school}{grade}的{exam}安排，已答应向班主任了解后回复。",
    "上次反映的{previous}问题，{progress}。",
    "家中{housing}，居住面积约{area}平方米，孩子有独立的书桌。",
    "孩子参加了{competition}，获得{prize}，家长希望学校多组织类似活动。",
    "{rel}对{policy}还有疑问，已约定{next}带齐材料到{office}当面咨询。",
    "孩子近期{emotion}，家长担心是否在学校受了委屈，已联系{teacher}了解情况。",
];


/// What a household's notes refer to.
#[derive(Clone)]
pub struct NoteContext {
    pub child: String,
    pub school: String,
    pub grade: String,
    pub family: String,
}

impl NoteContext {
    /// The household's first student, school and grade, and its family name.
    pub fn of(household: &Household) -> NoteContext {
        let s = household.students.first();
        NoteContext {
            child: s.map(|s| s.name.clone()).unwrap_or_else(|| "孩子".into()),
            school: s.map(|s| s.school.clone()).unwrap_or_else(|| "学校".into()),
            grade: s.map(|s| s.grade.clone()).unwrap_or_else(|| "三年级".into()),
            family: household.family_name.clone(),
        }
    }
}

fn slot(key: &str, rng: &mut StdRng, ctx: &NoteContext) -> String {
    let pick = |rng: &mut StdRng, items: &[&str]| items.choose(rng).unwrap().to_string();
    match key {
        "child" => ctx.child.clone(),
        "school" => ctx.school.clone(),
        "grade" => ctx.grade.clone(),
        "teacher" => format!("{}老师", FAMILY_NAMES.choose(rng).unwrap()),
        "road" => pick(rng, ROADS),
        "state" => pick(rng, &["良好", "稳定", "有所下滑", "比较紧张", "积极", "一般"]),
        "subject" => pick(rng, &["语文", "数学", "英语", "科学", "体育", "美术", "音乐", "道德与法治"]),
        "trend" => pick(rng, &["有进步", "略有下降", "基本持平", "提高了十几分", "进步明显"]),
        "rel" => pick(rng, &["母亲", "父亲", "祖母", "外婆", "祖父", "外公"]),
        "policy" => pick(rng, &["明年小升初积分入学", "幼升小报名", "随迁子女入学", "转学手续", "义务教育阶段补助"]),
        "material" => pick(
            rng,
            &["居住证、社保缴费证明和租房合同", "户口本、房产证和预防接种证", "居住证和父母的劳动合同", "出生证明和户口本", "在读证明和学籍卡"],
        ),
        "month" => (1 + rng.random_range(0..12)).to_string(),
        "day" => (1 + rng.random_range(0..28)).to_string(),
        "office" => pick(rng, &["街道教育办", "社区党群服务中心", "学校教务处", "区教育局服务窗口", "社区居委会"]),
        "hours" => pick(rng, &["两", "三", "四", "五"]),
        "city" => pick(rng, &["广州", "深圳", "东莞", "中山", "湛江", "湖南", "广西"]),
        "carer" => pick(rng, &["祖母", "外婆", "祖父", "姑姑"]),
        "satisfaction" => pick(rng, &["比较满意", "非常满意", "有些意见", "基本满意"]),
        "club" => pick(rng, &["体育类社团", "编程兴趣班", "书法课", "合唱团", "足球队训练"]),
        "condition" => pick(rng, &["轻微哮喘", "过敏性鼻炎", "近视加深", "食物过敏"]),
        "moved" => pick(rng, &["刚搬到新租的房子", "最近搬回老家附近", "租住在城中村", "换了更小的出租屋"]),
        "km" => (1 + rng.random_range(0..9)).to_string(),
        "commute" => pick(rng, &["坐公交", "骑自行车", "由家长骑电动车送", "步行"]),
        "minutes" => (10 + rng.random_range(0..50)).to_string(),
        "minutes2" => (5 + rng.random_range(0..25)).to_string(),
        "peer" => pick(rng, &["融洽", "还可以", "一般，有点内向"]),
        "hardship" => pick(rng, &["母亲失业两个月", "父亲工伤在家休养", "家里刚还完医疗欠款", "只有父亲一人有收入"]),
        "help" => pick(rng, &["就业帮扶", "困难补助", "临时救助", "学费减免"]),
        "lecture" => pick(rng, &["家庭教育讲座", "青春期心理健康讲座", "防溺水安全教育", "亲子阅读活动"]),
        "weekday" => pick(rng, &["下周六", "本周日", "下周三", "月底周六"]),
        "time" => pick(rng, &["上午九点", "下午三点", "晚上七点半"]),
        "venue" => pick(rng, &["社区党群服务中心", "学校报告厅", "街道文化站"]),
        "attend" => pick(rng, &["会准时参加", "可能没时间参加", "会让孩子母亲参加"]),
        "sibling" => pick(rng, &["弟弟", "妹妹"]),
        "level" => pick(rng, &["幼儿园", "小学", "初中"]),
        "food" => pick(rng, &["饭菜偏咸", "分量不够", "菜品单一"]),
        "activity" => pick(rng, &["上网课", "参加补习班", "睡午觉", "外出上兴趣班"]),
        "next" => pick(rng, &["下月", "两周后", "下周", "期中考试后"]),
        "elder" => pick(rng, &["祖父", "祖母", "外公", "外婆"]),
        "chore" => pick(rng, &["做饭", "照顾老人", "看店", "照顾弟弟妹妹"]),
        "achievement" => pick(rng, &["当上了班干部", "数学竞赛拿了奖", "作文被老师表扬", "学会了游泳", "被评为三好学生"]),
        "sleep" => pick(rng, &["十一点后才睡", "熬夜看视频", "做作业到很晚"]),
        "exam" => pick(rng, &["期中考试", "体育中考", "英语口语测试", "家长会"]),
        "previous" => pick(rng, &["校车接送", "学位申请", "食堂饭菜", "课后托管", "路口交通"]),
        "progress" => pick(
            rng,
            &["学校已经回复，家长表示满意", "还在等教育办答复", "已转交街道跟进，预计下月解决", "家长表示情况有所改善"],
        ),
        "housing" => pick(rng, &["租住两房一厅", "与亲戚合住", "住在自建房三楼", "住单位宿舍"]),
        "area" => (20 + rng.random_range(0..100)).to_string(),
        "competition" => pick(rng, &["区运会", "科技创新大赛", "书法比赛", "朗诵比赛"]),
        "prize" => pick(rng, &["二等奖", "三等奖", "优秀奖", "一等奖"]),
        "emotion" => pick(rng, &["情绪低落", "不愿意上学", "回家后很少说话", "脾气比较急躁"]),
        other => format!("{{{other}}}"),
    }
}

fn fill(template: &str, rng: &mut StdRng, ctx: &NoteContext) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = i + rest[i..].find('}').expect("closed slot");
        out.push_str(&slot(&rest[i + 1..j], rng, ctx));
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

/// A few sentences, as members write them.
pub fn visit_notes(rng: &mut StdRng, ctx: &NoteContext) -> String {
    let n = 2 + rng.random_range(0..3);
    (0..n)
        .map(|_| {
            let template = *NOTE_TEMPLATES.choose(rng).unwrap();
            fill(template, rng, ctx)
        })
        .collect::<Vec<_>>()
        .concat()
}


const ISSUES: &[(IssueCategory, &str, &str)] = &[
    (IssueCategory::Enrolment, "不清楚积分入学材料", "家长不清楚积分入学需要哪些证明材料，担心错过网上申请时间。"),
    (IssueCategory::Enrolment, "幼儿园学位申请", "弟弟明年上幼儿园，希望申请就近的公办幼儿园学位。"),
    (IssueCategory::Hardship, "家庭经济困难", "母亲失业，父亲收入不稳定，希望了解困难家庭补助和学费减免政策。"),
    (IssueCategory::StudentWelfare, "孩子情绪低落", "家长反映孩子最近不愿意上学，在家很少说话，希望学校心理老师关注。"),
    (IssueCategory::SchoolAndTransport, "放学路口交通安全", "路口放学时段车多，孩子过马路有危险，希望增加护学岗。"),
    (IssueCategory::FamilyEducation, "亲子沟通困难", "父亲常年在外，孩子与父亲沟通少，家长希望得到家庭教育指导。"),
    (IssueCategory::General, "食堂饭菜质量", "家长反映学校食堂近期饭菜偏咸，孩子经常吃不完。"),
];

/// A grown-up's full name.
pub fn person(rng: &mut StdRng) -> String {
    format!("{}{}", FAMILY_NAMES.choose(rng).unwrap(), GIVEN_ADULT.choose(rng).unwrap())
}


/// A home address in 桂城街道, e.g. 佛山市南海区桂城街道海八路 12 号中海锦城 3 座 1204.
pub fn address(rng: &mut StdRng) -> String {
    format!(
        "佛山市南海区桂城街道{}{}号{}{}座{}{:02}",
        ROADS.choose(rng).unwrap(),
        1 + rng.random_range(0..300),
        ESTATES.choose(rng).unwrap(),
        1 + rng.random_range(0..12),
        1 + rng.random_range(0..32),
        1 + rng.random_range(0..6)
    )
}

/// A visit to `household_id` that started at `started`, as a member records it.
pub fn new_visit(rng: &mut StdRng, household_id: &str, started: i64, ctx: &NoteContext) -> NewVisit {
    let mode = [VisitMode::InPerson, VisitMode::InPerson, VisitMode::InPerson, VisitMode::Phone, VisitMode::WeChat, VisitMode::AtSchool].choose(rng).unwrap().clone();
    let topics_all = [VisitTopic::FamilyEducation, VisitTopic::EnrolmentPolicy, VisitTopic::PublicOpinion, VisitTopic::StudentWellbeing];
    let mut topics = vec![topics_all.choose(rng).unwrap().clone()];
    if rng.random_ratio(50, 100) {
        let t = topics_all.choose(rng).unwrap().clone();
        if !topics.contains(&t) {
            topics.push(t);
        }
    }
    NewVisit {
        household_id: household_id.into(),
        visitors: vec![],
        started_at_ms: started,
        ended_at_ms: Some(started + (20 + rng.random_range(0..40) as i64) * 60_000),
        location: (mode == VisitMode::InPerson).then(|| Location {
            latitude: 23.03 + rng.random_range(0..1000) as f64 / 50_000.0,
            longitude: 113.13 + rng.random_range(0..1000) as f64 / 50_000.0,
            accuracy_m: Some(5.0 + rng.random_range(0..30) as f64),
        }),
        mode,
        people_met: vec![
            format!("{} {}{}", ["母亲", "父亲", "祖母", "外婆"].choose(rng).unwrap(), ctx.family, GIVEN_ADULT.choose(rng).unwrap()),
            format!("学生 {}", ctx.child),
        ],
        topics,
        notes: visit_notes(rng, ctx),
        follow_up_on: rng.random_ratio(30, 100).then(|| format!("2026-{:02}-{:02}", 3 + rng.random_range(0..4), 1 + rng.random_range(0..28))),
    }
}

/// A problem the family raised, for `assignee` to follow.
pub fn new_issue(rng: &mut StdRng, household_id: &str, visit_id: Option<String>, assignee: &str) -> NewIssue {
    let (category, title, description) = ISSUES.choose(rng).unwrap().clone();
    NewIssue {
        household_id: household_id.into(),
        visit_id,
        category,
        title: title.into(),
        description: description.into(),
        urgency: match rng.random_range(0..10) {
            0..=5 => Urgency::Normal,
            6..=7 => Urgency::Low,
            8 => Urgency::High,
            _ => Urgency::Urgent,
        },
        assignee: rng.random_ratio(70, 100).then(|| assignee.to_string()),
        due_on: Some(format!("2026-{:02}-{:02}", 1 + rng.random_range(0..6), 1 + rng.random_range(0..28))),
    }
}

/// The moves an issue has made since it was raised: none (still open) for four in ten.
pub fn issue_path(rng: &mut StdRng) -> &'static [IssueStatus] {
    match rng.random_range(0..10) {
        0..=3 => &[],
        4..=5 => &[IssueStatus::Acknowledged],
        6 => &[IssueStatus::Acknowledged, IssueStatus::InProgress],
        7 => &[IssueStatus::Referred],
        _ => &[IssueStatus::Acknowledged, IssueStatus::Resolved],
    }
}
