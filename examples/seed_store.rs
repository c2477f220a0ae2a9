//! Fills a sled data dir with many users and live sessions, fast, straight through the
//! store (no RPCs, no audit events for the seeded rows): for timing `stint serve` to
//! SERVING, and its memory, over a large store.
//!
//! ```text
//! cargo run --release --example seed_store -- /tmp/stint-big 10000 100000
//! stint serve --data-dir /tmp/stint-big     # admin / seed-admin-password-1
//! ```
#![allow(clippy::disallowed_methods)] // Session times come from the wall clock.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use stint::config::Config;
use stint::core::secret::SecretString;
use stint::store::sled::SledStore;
use stint::store::{Batch, Store, Table};

const ADMIN_PASSWORD: &str = "seed-admin-password-1";
const BATCH: usize = 2_000;

type Writes = Vec<(Table, Vec<u8>, Option<Vec<u8>>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: seed_store DATA_DIR [USERS=10000] [SESSIONS=100000]";
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let users: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let sessions: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let started = Instant::now();

    let config = Config {
        data_dir: dir.clone(),
        ..Config::default()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(stint::cli::init::initialise(
        &config,
        "admin",
        &SecretString::new(ADMIN_PASSWORD.into()),
        true,
    ))?;
    drop(runtime);

    let store = SledStore::open(&dir, 64 * 1024 * 1024)?;
    let admin = store.get(Table::Users, b"admin")?.ok_or("no admin user")?;
    let admin: serde_json::Value = serde_json::from_slice(&admin)?;
    let arn_prefix = admin["arn"]
        .as_str()
        .and_then(|arn| arn.strip_suffix("admin"))
        .ok_or("admin ARN")?
        .to_string();

    let mut writes = Vec::with_capacity(BATCH);
    let flush = |writes: &mut Writes| {
        // (sled's store panics on an empty batch; Tx::commit never sends one either)
        if writes.is_empty() {
            return Ok(());
        }
        store.commit(&Batch {
            expects: Vec::new(),
            writes: std::mem::take(writes),
        })
    };
    let mut ids = Vec::with_capacity(users);
    for i in 0..users {
        let name = format!("user{i:06}");
        let id = format!("AIDASEED{i:012}");
        let mut user = admin.clone();
        user["name"] = name.clone().into();
        user["id"] = id.clone().into();
        user["arn"] = format!("{arn_prefix}{name}").into();
        user["login_profile"] = serde_json::Value::Null;
        user["groups"] = serde_json::json!([]);
        ids.push((format!("{arn_prefix}{name}"), id));
        writes.push((
            Table::Users,
            name.into_bytes(),
            Some(serde_json::to_vec(&user)?),
        ));
        if writes.len() == BATCH {
            flush(&mut writes)?;
        }
    }
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    for i in 0..sessions {
        let (arn, id) = &ids[i % ids.len().max(1)];
        let jti = format!("seed{i:020}");
        let session = serde_json::json!({
            "v": 1,
            "jti": jti,
            "principal_arn": arn,
            "issued_at": now_ms,
            "expires_at": now_ms + 12 * 3_600_000,
            "session_policies": [],
            "principal_id": id,
        });
        writes.push((
            Table::Sessions,
            jti.into_bytes(),
            Some(serde_json::to_vec(&session)?),
        ));
        if writes.len() == BATCH {
            flush(&mut writes)?;
        }
    }
    flush(&mut writes)?;
    store.flush()?;
    println!(
        "seeded {} with {users} users and {sessions} live sessions in {:.1} s (admin / {ADMIN_PASSWORD})",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
