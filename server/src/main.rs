//! `doorstep-server`: run the sync server, or administer its store from the command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use doorstep_server::config::{Config, ConfigFile};
use doorstep_server::engine::Engine;
use doorstep_server::org::{Branch, Community, Member, Role};
use doorstep_server::store::sqlite::SqliteStore;
use doorstep_server::store::{data_dir, QuarantineStatus};
use doorstep_server::{admin, serve};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "doorstep-server", version, about = "Doorstep sync server / 户联系同步服务器")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "DOORSTEP_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the SQLite store lives.
        #[arg(long, env = "DOORSTEP_DATA_DIR", default_value = "doorstep-data")]
        data_dir: PathBuf,
        /// A TOML file with `[limits]` and `[backups]` tables (docs/operations.md).
        #[arg(long, env = "DOORSTEP_CONFIG")]
        config: Option<PathBuf>,
        /// Seed a small demo district into an empty store.
        #[arg(long)]
        demo: bool,
        /// When set, `/metrics` answers only requests with `Authorization: Bearer <this>`
        /// (for a server whose port is reachable beyond the monitoring network).
        #[arg(long, env = "DOORSTEP_METRICS_TOKEN", hide_env_values = true)]
        metrics_token: Option<String>,
    },
    /// Write a backup of the store to FILE (a new file), while the server runs or not.
    Backup {
        #[arg(long, env = "DOORSTEP_DATA_DIR", default_value = "doorstep-data")]
        data_dir: PathBuf,
        file: PathBuf,
    },
    /// Put the backup FILE in place of the store, the server stopped; the replaced store
    /// is kept in `replaced-<time>/` in the data directory.
    Restore {
        #[arg(long, env = "DOORSTEP_DATA_DIR", default_value = "doorstep-data")]
        data_dir: PathBuf,
        file: PathBuf,
    },
    /// Administer the store directly (run with the server stopped, or use the JSON API).
    Admin {
        #[arg(long, env = "DOORSTEP_DATA_DIR", default_value = "doorstep-data")]
        data_dir: PathBuf,
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Create an admin and print their token.
    CreateAdmin { id: String, name: String },
    /// List branches, communities and members.
    Organisation,
    AddBranch { id: String, name: String },
    AddCommunity { id: String, name: String },
    /// Add a member (role member, coordinator or admin).
    AddMember {
        id: String,
        name: String,
        #[arg(long, default_value = "member")]
        role: String,
        #[arg(long)]
        branch: Option<String>,
        /// For coordinators: branches they look after (repeatable).
        #[arg(long = "scope-branch")]
        scope_branches: Vec<String>,
        /// For coordinators: communities they look after (repeatable).
        #[arg(long = "scope-community")]
        scope_communities: Vec<String>,
    },
    /// Import households from a CSV file (columns: see `admin::CSV_COLUMNS`).
    ImportHouseholds { file: PathBuf, #[arg(long, default_value = "admin")] by: String },
    /// Assign a household to a member (or release with --release).
    Assign {
        household: String,
        member: String,
        #[arg(long)]
        release: bool,
        #[arg(long, default_value = "admin")]
        by: String,
    },
    /// Register a phone for a member; prints its one-time enrolment code. `--device ID`
    /// keeps the id of a phone this server does not know (enrolled after the backup it
    /// was restored from).
    EnrolDevice {
        member: String,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        device: Option<String>,
    },
    /// List devices (a member's with --member): id, label, enrolled, revoked.
    Devices {
        #[arg(long)]
        member: Option<String>,
    },
    /// Revoke a device (a lost phone).
    RevokeDevice { device: String },
    /// List quarantined changes.
    Quarantine,
    Release { hash: String, #[arg(long, default_value = "admin")] by: String },
    Discard { hash: String, #[arg(long, default_value = "admin")] by: String },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .json()
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("错误 / error: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { listen, data_dir, config, demo, metrics_token } => {
            let ConfigFile { limits, backups } = match config {
                Some(path) => ConfigFile::read(&path)?,
                None => ConfigFile::default(),
            };
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(serve(Config { listen, data_dir, limits, backups, demo, metrics_token }))
        }
        Command::Backup { data_dir, file } => {
            let bytes = data_dir::back_up(&data_dir, &file).map_err(|e| e.to_string())?;
            println!("备份已写入 / backup written: {} ({bytes} bytes)", file.display());
            Ok(())
        }
        Command::Restore { data_dir, file } => {
            let restored = data_dir::restore(&data_dir, &file).map_err(|e| e.to_string())?;
            println!("已恢复 / restored: {} into {} ({} bytes)", file.display(), data_dir.display(), restored.bytes);
            if let Some(aside) = restored.replaced {
                println!("被替换的数据库保存在 / the replaced store is kept in: {}", aside.display());
            }
            Ok(())
        }
        Command::Admin { data_dir, action } => {
            let mut engine = Engine::new(SqliteStore::open(&data_dir).map_err(|e| e.to_string())?);
            admin_action(&mut engine, action).map_err(|e| e.to_string())
        }
    }
}

fn admin_action(engine: &mut Engine<SqliteStore>, action: AdminAction) -> doorstep_server::error::Result<()> {
    let print = |v: serde_json::Value| println!("{}", serde_json::to_string_pretty(&v).expect("json prints"));
    match action {
        AdminAction::CreateAdmin { id, name } => print(serde_json::to_value(admin::create_admin(engine, &id, &name)?).expect("json")),
        AdminAction::Organisation => print(serde_json::to_value(admin::organisation(engine)?).expect("json")),
        AdminAction::AddBranch { id, name } => admin::add_branch(engine, &Branch { id, name })?,
        AdminAction::AddCommunity { id, name } => admin::add_community(engine, &Community { id, name })?,
        AdminAction::AddMember { id, name, role, branch, scope_branches, scope_communities } => {
            let role = Role::parse(&role).ok_or_else(|| {
                doorstep_server::error::ServerError::BadRequest(format!(
                    "角色应为 member、coordinator 或 admin / role must be member, coordinator or admin, not {role:?}"
                ))
            })?;
            admin::add_member(engine, &Member { id, name, role, branch_id: branch, scope_branches, scope_communities })?
        }
        AdminAction::ImportHouseholds { file, by } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| doorstep_server::error::ServerError::BadRequest(format!("{}: {e}", file.display())))?;
            let ids = admin::import_households_csv(engine, &by, &bytes)?;
            print(serde_json::json!({ "imported": ids.len(), "ids": ids }))
        }
        AdminAction::Assign { household, member, release, by } => admin::assign(engine, &by, &household, &member, !release)?,
        AdminAction::EnrolDevice { member, label, device } => {
            print(serde_json::to_value(admin::enrol_device(engine, &member, &label, device.as_deref())?).expect("json"))
        }
        AdminAction::Devices { member } => print(serde_json::to_value(admin::devices(engine, member.as_deref())?).expect("json")),
        AdminAction::RevokeDevice { device } => admin::revoke_device(engine, &device)?,
        AdminAction::Quarantine => print(serde_json::to_value(admin::quarantined(engine, Some(QuarantineStatus::Held))?).expect("json")),
        AdminAction::Release { hash, by } => engine.release(&by, &hash)?,
        AdminAction::Discard { hash, by } => engine.discard(&by, &hash)?,
    }
    Ok(())
}
