//! The broker's hot paths next to the primitives underneath, as ratios:
//!
//! - token verification vs one bare ring Ed25519 verify (target: within 20%);
//! - a password login (`GetSessionToken`) vs one bare argon2id verify with the same
//!   parameters (target: at most +15%);
//! - AssumeRole throughput with the durable audit log (fsync, group commit) vs the same
//!   with durability off (a store whose flush does nothing), and the batch sizes the group
//!   commit reached (target: at least 80%);
//! - the store's share of one mint: a group of 16 mints' writes (a session record and an
//!   audit record each, the sizes a real AssumeRole wrote) committed to sled, to the
//!   in-memory store, and as one `write` of the same bytes to a file, the append a
//!   write-ahead log would make (none of them flushed: fsync is measured separately).
//!
//! `cargo bench --bench broker` (criterion for the means; a summary table is printed last).
// Benchmarks set up fixed inputs: a failure there is a bug in the benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Benchmarks verify real tokens against the wall clock.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, UnparsedPublicKey};
use stint::audit::chain::CheckpointPolicy;
use stint::audit::writer::{AuditConfig, AuditLog};
use stint::broker::{
    AssumeRoleInput, Broker, BrokerSettings, Caller, LoginCredential, RequestMeta,
    SessionTokenInput, SystemClock,
};
use stint::core::authn::password::{self, Argon2Params};
use stint::core::authn::totp;
use stint::core::model::Account;
use stint::core::secret::SecretString;
use stint::store::memory::MemoryStore;
use stint::store::seal::MasterKey;
use stint::store::sled::SledStore;
use stint::store::{Batch, Entries, Entry, Store, StoreError, Table};

/// Durability off: everything as sled, but `flush` does nothing.
struct NoFlush(SledStore);

impl Store for NoFlush {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.0.scan(table, prefix, after, limit)
    }
    fn last(&self, table: Table) -> Result<Option<Entry>, StoreError> {
        self.0.last(table)
    }
    fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        self.0.commit(batch)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    broker: Arc<Broker>,
    admin: Caller,
    password: SecretString,
}

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:stint:iam::000000000000:user/admin"},"Action":"sts:AssumeRole"}]}"#;

async fn fixture(durable: bool, argon2: Argon2Params) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(dir.path(), 64 << 20).unwrap();
    let store: Arc<dyn Store> = if durable {
        Arc::new(sled)
    } else {
        Arc::new(NoFlush(sled))
    };
    let audit = AuditLog::open(
        store.clone(),
        AuditConfig {
            flush_timeout: Duration::from_secs(5),
            checkpoint: CheckpointPolicy {
                every_events: 1000,
                every_seconds: 300,
            },
        },
    )
    .unwrap();
    let mut settings = BrokerSettings::dev(Account::new("stint", "000000000000"));
    settings.argon2 = argon2;
    let master = MasterKey::generate(&SystemRandom::new()).unwrap();
    let broker = Broker::new(
        store.clone(),
        audit,
        master,
        settings,
        Arc::new(SystemClock),
    )
    .unwrap();
    let password = SecretString::new("bench password 123".into());
    let (_, _, seed) = broker.bootstrap_admin("admin", &password).await.unwrap();
    let admin_token = login_admin(&broker, seed.expose()).await;
    let admin = broker.authenticate(&admin_token).unwrap();
    let meta = RequestMeta::default();
    broker
        .create_user(&admin, &meta, "svc", "/", vec![], "")
        .await
        .unwrap();
    broker
        .set_login_profile(&admin, &meta, "svc", &password, false, true)
        .await
        .unwrap();
    broker
        .create_role(&admin, &meta, "bench", "/", TRUST, "", 43200, vec![], "")
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        store,
        broker,
        admin,
        password,
    }
}

/// The bootstrap admin has an enabled TOTP device: log in with a code from its seed.
async fn login_admin(broker: &Arc<Broker>, seed: &[u8]) -> String {
    let code = totp::code_at(seed, totp::step_at(SystemTime::now()));
    broker
        .get_session_token(
            &RequestMeta::default(),
            SessionTokenInput {
                credential: LoginCredential::Password {
                    user_name: "admin".into(),
                    password: SecretString::new("bench password 123".into()),
                },
                token_code: Some(SecretString::new(code)),
                duration_seconds: 129_600,
            },
        )
        .await
        .unwrap()
        .session_token
}

/// Mints per group in the store comparison: about what the audit writer's group commit
/// reaches at 64 concurrent callers (`stint bench` prints the figure).
const MINTS_PER_GROUP: u64 = 16;

/// The session and audit record one real AssumeRole stores, as bytes.
async fn last_mint_records() -> (Vec<u8>, Vec<u8>) {
    let fx = fixture(false, Argon2Params::TEST_CHEAP).await;
    fx.broker
        .assume_role(
            &RequestMeta::default(),
            &fx.admin,
            AssumeRoleInput {
                role_arn: "arn:stint:iam::000000000000:role/bench".into(),
                role_session_name: "records".into(),
                ..AssumeRoleInput::default()
            },
        )
        .await
        .unwrap();
    let sessions = fx.store.scan(Table::Sessions, &[], None, 16).unwrap();
    let audit = fx.store.last(Table::Audit).unwrap().unwrap();
    let session = sessions
        .into_iter()
        .map(|(_, value)| value)
        .find(|value| value.windows(10).any(|w| w == b"role/bench"))
        .unwrap();
    (session, audit.1)
}

fn summary_line(name: &str, ours: Duration, base: Duration, base_name: &str) {
    println!(
        "{name:<34} {:>10.1} µs   {base_name:<26} {:>10.1} µs   ratio {:.3}",
        ours.as_secs_f64() * 1e6,
        base.as_secs_f64() * 1e6,
        ours.as_secs_f64() / base.as_secs_f64()
    );
}

/// Medians of `ours` and `base`, measured in alternating batches of `per_batch` calls so
/// that machine noise falls on both alike.
fn interleaved(
    rounds: usize,
    per_batch: u32,
    ours: &mut dyn FnMut(),
    base: &mut dyn FnMut(),
) -> (Duration, Duration) {
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        for _ in 0..per_batch {
            f()
        }
        t.elapsed() / per_batch
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(time(ours));
        b.push(time(base));
    }
    (median(a), median(b))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut criterion = Criterion::default().configure_from_args().sample_size(20);
    let mut summary = Vec::new();

    // --- token verification vs bare Ed25519 verify
    let fx = rt.block_on(fixture(true, Argon2Params::TEST_CHEAP));
    let token = rt
        .block_on(fx.broker.get_session_token(
            &RequestMeta::default(),
            SessionTokenInput {
                credential: LoginCredential::Password {
                    user_name: "svc".into(),
                    password: fx.password.clone(),
                },
                token_code: None,
                duration_seconds: 3600,
            },
        ))
        .unwrap()
        .session_token;
    let verifier = fx.broker.token_verifier();
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = data_encoding::BASE64URL_NOPAD
        .decode(signature.as_bytes())
        .unwrap();
    let kid_key = fx.broker.signing_public_key();
    let public = UnparsedPublicKey::new(&ED25519, kid_key.to_vec());
    criterion.bench_function("verify/stint_token", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&token), SystemTime::now())
                .unwrap()
        })
    });
    criterion.bench_function("verify/bare_ed25519", |b| {
        b.iter(|| {
            public
                .verify(black_box(signing_input.as_bytes()), &signature)
                .unwrap()
        })
    });
    let (ours, base) = interleaved(
        31,
        200,
        &mut || {
            verifier.verify(&token, SystemTime::now()).unwrap();
        },
        &mut || {
            public.verify(signing_input.as_bytes(), &signature).unwrap();
        },
    );
    summary.push(("token verify", ours, base, "bare Ed25519 verify"));

    // --- login vs bare argon2id verify, OWASP parameters
    let owasp = Argon2Params::default();
    let fx_login = rt.block_on(fixture(true, owasp));
    let phc = password::hash_password(&fx_login.password, &[7; 16], &owasp).unwrap();
    let login = || {
        rt.block_on(fx_login.broker.get_session_token(
            &RequestMeta::default(),
            SessionTokenInput {
                credential: LoginCredential::Password {
                    user_name: "svc".into(),
                    password: fx_login.password.clone(),
                },
                token_code: None,
                duration_seconds: 3600,
            },
        ))
        .unwrap();
    };
    criterion.bench_function("login/get_session_token", |b| b.iter(login));
    criterion.bench_function("login/bare_argon2id_verify", |b| {
        b.iter(|| password::verify_password(&fx_login.password, black_box(&phc)).unwrap())
    });
    let (ours, base) = interleaved(15, 1, &mut || login(), &mut || {
        password::verify_password(&fx_login.password, &phc).unwrap();
    });
    summary.push((
        "login (GetSessionToken)",
        ours,
        base,
        "bare argon2id verify",
    ));

    // --- AssumeRole throughput: durable audit vs durability off
    let throughput = |durable: bool, tasks: u32| -> (f64, String) {
        let fx = rt.block_on(fixture(durable, Argon2Params::TEST_CHEAP));
        let role_arn = "arn:stint:iam::000000000000:role/bench".to_string();
        let per_task = 2560 / tasks;
        let started = Instant::now();
        rt.block_on(async {
            let mut handles = Vec::new();
            for t in 0..tasks {
                let broker = fx.broker.clone();
                let admin = fx.admin.clone();
                let role_arn = role_arn.clone();
                handles.push(tokio::spawn(async move {
                    for i in 0..per_task {
                        broker
                            .assume_role(
                                &RequestMeta::default(),
                                &admin,
                                AssumeRoleInput {
                                    role_arn: role_arn.clone(),
                                    role_session_name: format!("s{t}-{i}"),
                                    ..AssumeRoleInput::default()
                                },
                            )
                            .await
                            .unwrap();
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        });
        let per_sec = f64::from(tasks * per_task) / started.elapsed().as_secs_f64();
        let stats = fx.broker.audit_log().stats();
        (per_sec, format!("{stats:?}"))
    };
    // The same total work at two concurrency levels: with few callers the durable path is
    // bound by fsync latency, with enough callers by CPU, like the path without fsync.
    let runs: Vec<(u32, f64, String, f64)> = [64, 256]
        .into_iter()
        .map(|tasks| {
            let (durable, stats) = throughput(true, tasks);
            let (off, _) = throughput(false, tasks);
            (tasks, durable, stats, off)
        })
        .collect();

    // --- the store's share of a mint: sled vs in-memory vs a plain append
    let (session, audit) = rt.block_on(last_mint_records());
    let mint_group = |first: u64| -> Vec<Batch> {
        (first..first + MINTS_PER_GROUP)
            .map(|n| Batch {
                expects: vec![(Table::Audit, n.to_be_bytes().to_vec(), None)],
                writes: vec![
                    (Table::Audit, n.to_be_bytes().to_vec(), Some(audit.clone())),
                    (
                        Table::Sessions,
                        format!("ASIA{n:016}").into_bytes(),
                        Some(session.clone()),
                    ),
                ],
            })
            .collect()
    };
    let sled_dir = tempfile::tempdir().unwrap();
    let sled = SledStore::open(sled_dir.path(), 64 << 20).unwrap();
    let memory = MemoryStore::new();
    let mut wal = tempfile::tempfile().unwrap();
    let (mut next_sled, mut next_memory) = (0u64, 0u64);
    let commit_to = |store: &dyn Store, next: &mut u64| {
        let group = mint_group(*next);
        *next += MINTS_PER_GROUP;
        let (applied, outcome) = store.commit_group(&group);
        outcome.unwrap();
        assert_eq!(applied, group.len());
    };
    let mut append = || {
        let mut bytes = Vec::with_capacity(MINTS_PER_GROUP as usize * 2048);
        for batch in mint_group(0) {
            for (_, key, value) in &batch.writes {
                bytes.extend_from_slice(key);
                bytes.extend_from_slice(value.as_deref().unwrap_or_default());
            }
        }
        wal.write_all(&bytes).unwrap();
    };
    let (on_sled, appended) =
        interleaved(31, 8, &mut || commit_to(&sled, &mut next_sled), &mut append);
    let (in_memory, _) = interleaved(
        31,
        8,
        &mut || commit_to(&memory, &mut next_memory),
        &mut || {},
    );
    let per_mint = |group: Duration| group / MINTS_PER_GROUP as u32;
    summary.push((
        "store: one mint's records on sled",
        per_mint(on_sled),
        per_mint(appended),
        "the same bytes appended",
    ));
    summary.push((
        "store: one mint's records in memory",
        per_mint(in_memory),
        per_mint(appended),
        "the same bytes appended",
    ));
    println!(
        "(a mint's records: session {} B, audit {} B; groups of {MINTS_PER_GROUP})",
        session.len(),
        audit.len()
    );

    criterion.final_summary();
    println!("\n== summary (medians; ratio = ours / primitive)");
    for (name, ours, base, base_name) in summary {
        summary_line(name, ours, base, base_name);
    }
    for (tasks, durable, stats, off) in runs {
        println!(
            "AssumeRole, {tasks} concurrent callers: durable audit {durable:.0}/s, durability off {off:.0}/s, kept {:.1}%",
            100.0 * durable / off
        );
        println!("  group commit with durable audit: {stats}");
    }
}
