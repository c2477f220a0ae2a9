//! The deployment files in `deploy/` (issue 11, item 6) checked against the code they
//! deploy, so that neither drifts unnoticed: every YAML file parses; the Kubernetes
//! manifests have the promised shape (3 replicas, probes on the ops port, a PDB and a
//! Service that select the pods, hardened non-root containers with resources, Secrets
//! that exist or that deploy/README.md tells the operator to create); every command line
//! and `STINT_*` variable given to Stint in a manifest or the compose file goes through
//! the real CLI parser and config loader (a renamed key or flag fails here); the TOML
//! examples load through the strict config parser; the Dockerfile builds from what the
//! release build reads and runs as non-root; the systemd unit passes `systemd-analyze
//! verify` where systemd is installed. `.ci/run` adds the schema linters (kubernetes-
//! validate, compose-spec, hadolint, yamllint, `haproxy -c`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use clap::Parser;
use serde::Deserialize;
use serde_norway::Value;

use stint::cli::{Cli, Command};
use stint::config::{Config, Overrides};

const BIN: &str = env!("CARGO_BIN_EXE_stint");
const GRPC_PORT: u64 = 7420;
const OPS_PORT: u64 = 7421;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file, with `<<` merge keys applied (compose uses them).
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}"));
            value.apply_merge().unwrap_or_else(|e| panic!("{rel}: {e}"));
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// `deploy/…` paths of the YAML files under `deploy/<sub>`.
fn yaml_files(sub: &str) -> Vec<String> {
    let mut files = Vec::new();
    files_under(&repo().join("deploy").join(sub), &mut files);
    files
        .into_iter()
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .map(|p| {
            p.strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    seq(v)
        .iter()
        .map(|s| str_of(s, "list item").to_string())
        .collect()
}

/// A YAML mapping of strings (labels, selectors, compose environment).
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => panic!("{k:?}: not a scalar: {other:?}"),
                    };
                    (str_of(k, "key").to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{addr}: no port"))
}

// ---------------------------------------------------------------- config of the build

/// Whether this build's config has the `[ops]` section (issue 11, item 5, built beside
/// these files). Until it does, `ops.listen` / `STINT_OPS__LISTEN` are left out of the
/// checks, loudly; everything else is checked.
fn config_knows_ops() -> bool {
    let known =
        Config::from_toml_str("[ops]\nlisten = \"0.0.0.0:7421\"\n", Path::new("probe")).is_ok();
    static WARN: Once = Once::new();
    if !known {
        WARN.call_once(|| {
            eprintln!(
                "deploy_files: WARNING: this build's config has no [ops] section yet: \
                 ops.listen / STINT_OPS__LISTEN are not checked against the config loader"
            );
        });
    }
    known
}

/// TOML text without its `[ops]` section, when the build does not know it.
fn without_unknown_ops(text: &str) -> String {
    if config_knows_ops() {
        return text.to_string();
    }
    let mut out = String::new();
    let mut in_ops = false;
    for line in text.lines() {
        if line.trim_start().starts_with('[') {
            in_ops = line.trim() == "[ops]";
        }
        if !in_ops {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Runs Stint's own CLI parser and config loader on a command line and environment, as
/// `stint` would in that container; fails on a flag, variable or value it does not take.
fn check_stint_invocation(what: &str, args: &[String], env: &[(String, String)]) -> Config {
    let cli = Cli::try_parse_from(std::iter::once("stint".to_string()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("{what}: `stint {}`: {e}", args.join(" ")));
    let (server, overrides) = match &cli.command {
        Command::Serve(a) => (
            &a.server,
            Overrides {
                listen: a.listen,
                tls_cert: a.tls_cert.clone(),
                tls_key: a.tls_key.clone(),
                tls_client_ca: a.tls_client_ca.clone(),
                dev_tls: a.dev_tls,
                insecure: a.insecure,
                log_format: a.log_format,
                dev: a.dev,
                ..Overrides::default()
            },
        ),
        Command::Init(a) => (&a.server, Overrides::default()),
        _ => panic!(
            "{what}: `stint {}` is neither serve nor init",
            args.join(" ")
        ),
    };
    let overrides = Overrides {
        data_dir: server.data_dir.clone(),
        master_key_file: server.master_key_file.clone(),
        store_url: server.store_url.clone(),
        ..overrides
    };
    assert!(
        server.config.is_none(),
        "{what}: the manifests configure by environment"
    );
    let env: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != "STINT_OPS__LISTEN" || config_knows_ops())
        .cloned()
        .collect();
    let (config, warnings) = Config::load_with_warnings(None, &env, &overrides)
        .unwrap_or_else(|e| panic!("{what}: the config loader refuses it: {e}"));
    assert!(
        warnings.is_empty(),
        "{what}: not config keys: {}",
        warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    config
}

// ---------------------------------------------------------------------- Kubernetes

struct Manifests {
    docs: Vec<Value>,
}

impl Manifests {
    /// Every document of every YAML file under `deploy/<sub>`.
    fn load(sub: &str) -> Self {
        let docs = yaml_files(sub).iter().flat_map(|f| yaml_docs(f)).collect();
        Self { docs }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "exactly one {kind}");
        all[0]
    }
}

fn containers(pod: &Value) -> Vec<&Value> {
    seq(&pod["initContainers"])
        .iter()
        .chain(seq(&pod["containers"]))
        .collect()
}

fn is_stint(container: &Value) -> bool {
    let image = str_of(&container["image"], "image");
    image
        .rsplit('/')
        .next()
        .unwrap_or(image)
        .starts_with("stint:")
}

/// The environment a container gets; a Secret's value is stood in for by a value of the
/// right form (the only Secret-held variable is the database URL).
fn container_env(container: &Value) -> Vec<(String, String)> {
    seq(&container["env"])
        .iter()
        .map(|e| {
            let name = str_of(&e["name"], "env name").to_string();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if !e["valueFrom"]["secretKeyRef"].is_null() {
                assert_eq!(name, "STINT_STORE__URL", "which secret value is {name}?");
                "postgres://stint:PASSWORD@postgres:5432/stint".to_string()
            } else {
                panic!("{name}: unsupported env source {e:?}");
            };
            (name, value)
        })
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn container_port(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = str_of(port, "port");
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// Hardening and resources of every container of a pod spec; the Secrets and ConfigMaps
/// it reads are added to `refs`.
fn check_pod_spec(what: &str, pod: &Value, refs: &mut BTreeSet<String>) {
    let pod_sc = &pod["securityContext"];
    assert_eq!(
        pod["automountServiceAccountToken"].as_bool(),
        Some(false),
        "{what}"
    );
    for c in containers(pod) {
        let name = format!("{what}/{}", str_of(&c["name"], "container name"));
        let sc = &c["securityContext"];
        let non_root = sc["runAsNonRoot"]
            .as_bool()
            .or(pod_sc["runAsNonRoot"].as_bool());
        assert_eq!(non_root, Some(true), "{name}: runAsNonRoot");
        let uid = sc["runAsUser"].as_u64().or(pod_sc["runAsUser"].as_u64());
        assert!(
            uid.is_some_and(|u| u > 0),
            "{name}: a numeric non-root runAsUser"
        );
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(
            strings(&sc["capabilities"]["drop"]),
            ["ALL"],
            "{name}: drop ALL"
        );
        let seccomp = sc["seccompProfile"]["type"]
            .as_str()
            .or(pod_sc["seccompProfile"]["type"].as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"), "{name}: seccomp");
        let res = &c["resources"];
        for (kind, key) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(!res[kind][key].is_null(), "{name}: resources.{kind}.{key}");
        }
        // Every mount names a volume of the pod.
        for m in seq(&c["volumeMounts"]) {
            let vol = str_of(&m["name"], "mount name");
            assert!(
                seq(&pod["volumes"])
                    .iter()
                    .any(|v| v["name"].as_str() == Some(vol)),
                "{name}: mounts unknown volume {vol}"
            );
        }
        for e in seq(&c["env"]) {
            for source in ["secretKeyRef", "configMapKeyRef"] {
                if let Some(n) = e["valueFrom"][source]["name"].as_str() {
                    refs.insert(n.to_string());
                }
            }
        }
    }
    for v in seq(&pod["volumes"]) {
        if let Some(n) = v["secret"]["secretName"].as_str() {
            refs.insert(n.to_string());
        }
        if let Some(n) = v["configMap"]["name"].as_str() {
            refs.insert(n.to_string());
        }
    }
}

/// The mount of `container` under which `path` lies, with its volume.
fn mount_of<'a>(pod: &'a Value, container: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let mount = seq(&container["volumeMounts"])
        .iter()
        .filter(|m| Path::new(path).starts_with(str_of(&m["mountPath"], "mountPath")))
        .max_by_key(|m| str_of(&m["mountPath"], "mountPath").len())
        .unwrap_or_else(|| panic!("{path} is on no volume of its container"));
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    (mount, volume)
}

/// The Stint server container of a pod: probes on the ops port, listeners on the ports
/// the container declares, and a command line and environment Stint accepts.
fn check_server_container(what: &str, pod: &Value) -> (Config, Vec<(String, String)>) {
    let servers: Vec<&Value> = seq(&pod["containers"])
        .iter()
        .filter(|c| is_stint(c))
        .collect();
    assert_eq!(servers.len(), 1, "{what}: one stint container");
    let c = servers[0];
    let env = container_env(c);
    let config = check_stint_invocation(what, &strings(&c["args"]), &env);
    assert!(matches!(
        Cli::try_parse_from(["stint".to_string()].into_iter().chain(strings(&c["args"]))),
        Ok(Cli {
            command: Command::Serve(_),
            ..
        })
    ));
    assert_eq!(config.listen.port() as u64, GRPC_PORT, "{what}: gRPC port");
    assert_eq!(container_port(c, &"grpc".into()), GRPC_PORT, "{what}");
    let ops = env_value(&env, "STINT_OPS__LISTEN").expect("STINT_OPS__LISTEN");
    assert_eq!(port_of(ops), OPS_PORT, "{what}: ops port");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{what}: {probe}");
        assert_eq!(
            container_port(c, &get["port"]),
            OPS_PORT,
            "{what}: {probe} port"
        );
    }
    // Off loopback: TLS, with the pair from a Secret mounted read-only.
    assert!(!config.insecure, "{what}: no plain gRPC in Kubernetes");
    let cert = config.tls.cert_file.clone().expect("tls.cert_file");
    let key = config.tls.key_file.clone().expect("tls.key_file");
    for file in [&cert, &key] {
        let (mount, volume) = mount_of(pod, c, file.to_str().unwrap());
        assert_eq!(mount["readOnly"].as_bool(), Some(true), "{what}: {file:?}");
        assert!(
            !volume["secret"].is_null(),
            "{what}: {file:?} comes from a Secret"
        );
        assert_eq!(
            volume["secret"]["defaultMode"].as_u64(),
            Some(0o440),
            "{what}"
        );
    }
    assert!(config.issuer().starts_with("https://"), "{what}: issuer");
    (config, env)
}

/// Secrets and ConfigMaps the manifests read: defined beside them, or created by the
/// operator with a `kubectl create secret|configmap` line of deploy/README.md.
fn check_refs_exist(what: &str, m: &Manifests, refs: &BTreeSet<String>) {
    let readme = read("deploy/README.md");
    for name in refs {
        let defined = ["Secret", "ConfigMap"]
            .iter()
            .flat_map(|k| m.all(k))
            .any(|d| d["metadata"]["name"].as_str() == Some(name));
        let documented = readme.lines().any(|l| {
            (l.contains("kubectl create secret") || l.contains("kubectl create configmap"))
                && l.split_whitespace().any(|w| w == name)
        });
        assert!(
            defined || documented,
            "{what}: {name} is neither defined in the manifests nor created in deploy/README.md"
        );
    }
}

fn selector_selects(selector: &Value, labels: &Value) -> bool {
    let labels = string_map(labels);
    let wanted = string_map(selector);
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn every_yaml_file_under_deploy_parses() {
    let files = yaml_files("");
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        assert!(!yaml_docs(&file).is_empty(), "{file}: empty");
    }
}

#[test]
fn kubernetes_ha_is_three_replicas_on_postgres_behind_a_pdb_and_a_service() {
    let m = Manifests::load("kubernetes/ha");
    let deploy = m.one("Deployment");
    assert_eq!(deploy["spec"]["replicas"].as_u64(), Some(3));
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    assert!(
        selector_selects(selector, labels),
        "the Deployment selects its pods"
    );

    let pdb = m.one("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"].as_u64(), Some(2));
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"], *selector,
        "PDB selector"
    );

    let svc = m.one("Service");
    assert!(
        selector_selects(&svc["spec"]["selector"], labels),
        "Service selector"
    );
    let port = &seq(&svc["spec"]["ports"])[0];
    assert_eq!(port["port"].as_u64(), Some(GRPC_PORT));

    let pod = &deploy["spec"]["template"]["spec"];
    let mut refs = BTreeSet::new();
    check_pod_spec("ha", pod, &mut refs);
    let (config, _) = check_server_container("ha", pod);
    let server = seq(&pod["containers"])
        .iter()
        .find(|c| is_stint(c))
        .unwrap();
    assert_eq!(container_port(server, &port["targetPort"]), GRPC_PORT);

    // PostgreSQL, from a Secret; the pool fits the database.
    assert!(
        config
            .store
            .url
            .as_deref()
            .unwrap()
            .starts_with("postgres://")
    );
    assert!(
        config.store.pool_size * 3 < 100,
        "3 × pool_size < max_connections (100)"
    );

    // The master key: the Secret's file, copied by the init container to a memory volume
    // (Stint refuses the Secret volume's 0440), at the path the server reads.
    let key = config.master_key_path();
    let (_, volume) = mount_of(pod, server, key.to_str().unwrap());
    assert_eq!(volume["emptyDir"]["medium"].as_str(), Some("Memory"));
    let copier = seq(&pod["initContainers"])
        .iter()
        .find(|c| {
            seq(&c["volumeMounts"])
                .iter()
                .any(|vm| vm["name"] == volume["name"])
        })
        .expect("an init container fills the master key volume");
    let cmd = strings(&copier["command"]);
    assert_eq!(cmd.last().map(PathBuf::from), Some(key.clone()), "{cmd:?}");
    assert!(cmd.windows(2).any(|w| w == ["-m", "0600"]), "{cmd:?}");
    let source = &cmd[cmd.len() - 2];
    let (_, secret) = mount_of(pod, copier, source);
    assert_eq!(
        secret["secret"]["secretName"].as_str(),
        Some("stint-master-key")
    );
    let items = seq(&secret["secret"]["items"]);
    assert!(
        items
            .iter()
            .any(|i| source.ends_with(str_of(&i["path"], "path")))
    );

    // Replicas spread over nodes.
    let spread = seq(&pod["topologySpreadConstraints"]);
    assert!(spread.iter().any(|s| {
        s["topologyKey"].as_str() == Some("kubernetes.io/hostname")
            && selector_selects(&s["labelSelector"]["matchLabels"], labels)
    }));
    check_refs_exist("ha", &m, &refs);
}

#[test]
fn kubernetes_single_node_is_one_statefulset_on_its_volume() {
    let m = Manifests::load("kubernetes/single-node");
    let sts = m.one("StatefulSet");
    assert_eq!(
        sts["spec"]["replicas"].as_u64(),
        Some(1),
        "sled: one process only"
    );
    let selector = &sts["spec"]["selector"]["matchLabels"];
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    assert!(selector_selects(selector, labels));
    let svc = m.one("Service");
    assert!(selector_selects(&svc["spec"]["selector"], labels));
    assert_eq!(
        sts["spec"]["serviceName"], svc["metadata"]["name"],
        "the StatefulSet's governing Service"
    );

    // The pod as the StatefulSet controller makes it: each claim template a volume.
    let mut pod = sts["spec"]["template"]["spec"].clone();
    for template in seq(&sts["spec"]["volumeClaimTemplates"]) {
        let name = template["metadata"]["name"].clone();
        let claim: Value = serde_norway::from_str(&format!(
            "{{name: {}, persistentVolumeClaim: {{claimName: claim}}}}",
            str_of(&name, "template name")
        ))
        .unwrap();
        pod["volumes"].as_sequence_mut().unwrap().push(claim);
    }
    let pod = &pod;
    let mut refs = BTreeSet::new();
    check_pod_spec("single-node", pod, &mut refs);
    let (config, _) = check_server_container("single-node", pod);
    assert!(config.store.url.is_none(), "sled");
    // The data dir is a subdirectory of the claimed volume (its root belongs to fsGroup,
    // which Stint's 0700 would fight), and the kubelet leaves file modes alone.
    let server = seq(&pod["containers"])
        .iter()
        .find(|c| is_stint(c))
        .unwrap();
    let (mount, _) = mount_of(pod, server, config.data_dir.to_str().unwrap());
    assert_ne!(
        Path::new(str_of(&mount["mountPath"], "mountPath")),
        config.data_dir
    );
    assert_eq!(mount["readOnly"].as_bool(), None);
    let template = seq(&sts["spec"]["volumeClaimTemplates"])
        .iter()
        .find(|t| t["metadata"]["name"] == mount["name"])
        .expect("the data volume is a volumeClaimTemplate");
    assert_eq!(
        pod["securityContext"]["fsGroupChangePolicy"].as_str(),
        Some("OnRootMismatch")
    );

    // init-pod.yaml: the claim stint-0 will get, initialised by `stint init`.
    let claim_name = format!(
        "{}-{}-0",
        str_of(&template["metadata"]["name"], "template"),
        str_of(&sts["metadata"]["name"], "name")
    );
    let claim = m
        .all("PersistentVolumeClaim")
        .into_iter()
        .find(|c| c["metadata"]["name"].as_str() == Some(&claim_name))
        .unwrap_or_else(|| panic!("init-pod.yaml creates {claim_name}"));
    assert_eq!(claim["spec"], template["spec"], "same spec as the template");
    let init_pod = &m.one("Pod")["spec"];
    check_pod_spec("single-node init", init_pod, &mut refs);
    let init = &seq(&init_pod["containers"])[0];
    assert!(is_stint(init));
    assert_eq!(init["stdin"].as_bool(), Some(true), "password on stdin");
    assert_eq!(init["stdinOnce"].as_bool(), Some(true));
    let init_config = check_stint_invocation("single-node init", &strings(&init["args"]), &[]);
    assert_eq!(
        init_config.data_dir, config.data_dir,
        "init and serve share the data dir"
    );
    let init_volume = seq(&init_pod["volumes"])
        .iter()
        .find(|v| !v["persistentVolumeClaim"].is_null())
        .unwrap();
    assert_eq!(
        init_volume["persistentVolumeClaim"]["claimName"].as_str(),
        Some(claim_name.as_str())
    );
    let (init_mount, _) = mount_of(init_pod, init, init_config.data_dir.to_str().unwrap());
    assert_eq!(init_mount["mountPath"], mount["mountPath"]);
    check_refs_exist("single-node", &m, &refs);
}

// ---------------------------------------------------------------------------- compose

#[test]
fn compose_runs_postgres_an_init_and_three_replicas_behind_haproxy() {
    let docs = yaml_docs("deploy/compose.yaml");
    let services = &docs[0]["services"];
    let names: BTreeSet<&str> = services
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| str_of(k, "service"))
        .collect();
    let replicas = ["stint-1", "stint-2", "stint-3"];
    for name in ["postgres", "init", "lb"].iter().chain(&replicas) {
        assert!(names.contains(name), "service {name}");
    }
    assert!(str_of(&services["postgres"]["image"], "image").starts_with("postgres:15"));
    assert!(!services["postgres"]["healthcheck"].is_null());

    let depends = |svc: &str| -> BTreeMap<String, String> {
        let d = &services[svc]["depends_on"];
        match d {
            Value::Sequence(_) => strings(d)
                .into_iter()
                .map(|s| (s, "service_started".into()))
                .collect(),
            _ => d
                .as_mapping()
                .unwrap()
                .iter()
                .map(|(k, v)| (str_of(k, "dep").into(), str_of(&v["condition"], "c").into()))
                .collect(),
        }
    };

    // init: the database's schema, the shared master key in the `keys` volume.
    let init = &services["init"];
    assert_eq!(depends("init")["postgres"], "service_healthy");
    assert_eq!(strings(&init["profiles"]), ["init"], "not started by `up`");
    let init_env: Vec<_> = string_map(&init["environment"]).into_iter().collect();
    let init_config = check_stint_invocation("compose init", &strings(&init["command"]), &init_env);
    let key = init_config.master_key_path();
    let key_volume = strings(&init["volumes"])
        .into_iter()
        .find(|v| key.starts_with(v.split(':').nth(1).unwrap()))
        .expect("the master key is on a volume");
    let (volume_name, key_dir) = {
        let mut parts = key_volume.split(':');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    assert!(
        docs[0]["volumes"].get(volume_name.as_str()).is_some(),
        "named volume {volume_name}"
    );

    let mut listen_port = None;
    let mut ops_port = None;
    for name in replicas {
        let svc = &services[name];
        assert_eq!(depends(name)["postgres"], "service_healthy", "{name}");
        let env: Vec<_> = string_map(&svc["environment"]).into_iter().collect();
        let config = check_stint_invocation(name, &strings(&svc["command"]), &env);
        assert_eq!(
            config.store.url, init_config.store.url,
            "{name}: the same database"
        );
        assert_eq!(config.master_key_path(), key, "{name}: the same master key");
        assert!(
            strings(&svc["volumes"]).contains(&format!("{volume_name}:{key_dir}:ro")),
            "{name}: the key volume, read-only"
        );
        assert_eq!(
            config.issuer(),
            "http://127.0.0.1:7420",
            "{name}: the URL clients use"
        );
        assert_eq!(svc["read_only"].as_bool(), Some(true), "{name}");
        listen_port = Some(config.listen.port() as u64);
        ops_port = Some(port_of(env_value(&env, "STINT_OPS__LISTEN").unwrap()));
        // Plain gRPC off loopback: allowed only because the LB is published on loopback.
        assert!(config.insecure, "{name}");
    }
    let lb = &services["lb"];
    let lb_deps = depends("lb");
    for name in replicas {
        assert!(lb_deps.contains_key(name), "lb depends on {name}");
    }
    let published = strings(&lb["ports"]);
    assert_eq!(
        published,
        ["127.0.0.1:7420:7420"],
        "loopback only: plain gRPC"
    );

    // The HAProxy config the LB mounts: every replica, on its gRPC port, checked on /readyz.
    let cfg_mount = strings(&lb["volumes"])
        .into_iter()
        .find(|v| v.contains("haproxy.cfg"))
        .unwrap();
    let cfg_path = cfg_mount.split(':').next().unwrap();
    let cfg = read(&format!("deploy/{}", cfg_path.trim_start_matches("./")));
    let servers: BTreeSet<(String, String)> = cfg
        .lines()
        .map(str::split_whitespace)
        .filter_map(|mut w| match (w.next(), w.next(), w.next()) {
            (Some("server"), Some(name), Some(addr)) => {
                let rest: Vec<&str> = w.collect();
                assert_eq!(rest, ["check-proto", "h1"], "{name}: checks in HTTP/1.1");
                Some((name.into(), addr.into()))
            }
            _ => None,
        })
        .collect();
    let expected: BTreeSet<(String, String)> = replicas
        .iter()
        .map(|r| (r.to_string(), format!("{r}:{}", listen_port.unwrap())))
        .collect();
    assert_eq!(servers, expected, "haproxy.cfg names the 3 replicas");
    assert!(
        cfg.contains("option httpchk GET /readyz"),
        "readiness check"
    );
    assert!(
        cfg.contains(&format!("check port {}", ops_port.unwrap())),
        "health checks on the ops port"
    );
    assert!(cfg.contains("bind :7420\n"), "gRPC and HTTP/1.1 front end");
    assert!(cfg.contains("proto h2 "), "h2c to the replicas");
    assert!(
        cfg.contains("option redispatch 1"),
        "a refused request goes elsewhere"
    );
}

// ------------------------------------------------------------------------------- TOML

#[test]
fn the_toml_examples_load_through_the_strict_parser() {
    for file in ["deploy/stint.toml", "deploy/stint-postgres.toml"] {
        let text = without_unknown_ops(&read(file));
        let config =
            Config::from_toml_str(&text, Path::new(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        config.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let pg = Config::from_toml_str(
        &without_unknown_ops(&read("deploy/stint-postgres.toml")),
        Path::new("stint-postgres.toml"),
    )
    .unwrap();
    assert!(pg.store.url.as_deref().unwrap().starts_with("postgres://"));
    assert!(
        pg.master_key_file.is_some(),
        "replicas share an explicit key file"
    );
    assert!(!pg.master_key_path().starts_with(&pg.data_dir));
    assert!(pg.tls.enabled() && !pg.insecure);
    assert!(!pg.tokens.issuer.is_empty(), "one issuer for every replica");
    if config_knows_ops() {
        assert!(read("deploy/stint-postgres.toml").contains("[ops]"));
    }
    // A key the parser does not know is refused, so the examples cannot drift silently.
    let err = Config::from_toml_str("[store]\npool_sise = 8\n", Path::new("t")).unwrap_err();
    assert!(err.to_string().contains("store.pool_sise"), "{err}");
}

// ------------------------------------------------------------------------- Dockerfile

struct Instruction {
    op: String,
    args: String,
}

/// Instructions of a Dockerfile, continuation lines joined, comments dropped; split into
/// stages at each FROM.
fn dockerfile_stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        logical.push(std::mem::take(&mut current));
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical {
        let (op, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let ins = Instruction {
            op: op.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if ins.op == "FROM" {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(ins);
        }
    }
    stages
}

fn json_list(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form expected: {args}: {e}"))
}

/// Sources of a COPY without --from (build context paths).
fn copy_sources(args: &str) -> Vec<String> {
    let words: Vec<&str> = args
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    words[..words.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Repository paths the release build reads through include_str!/include_bytes! in
/// src/: those before a file's first `#[cfg(test)]` (unit tests sit at the end of a file),
/// test fixtures under tests/ excepted.
fn build_inputs() -> BTreeSet<PathBuf> {
    let mut files = Vec::new();
    files_under(&repo().join("src"), &mut files);
    let mut inputs = BTreeSet::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        for marker in ["include_str!(\"", "include_bytes!(\""] {
            for rest in text.split(marker).skip(1) {
                let rel = rest.split('"').next().unwrap();
                let mut path = file.parent().unwrap().to_path_buf();
                for part in Path::new(rel).components() {
                    match part {
                        std::path::Component::ParentDir => {
                            path.pop();
                        }
                        other => path.push(other),
                    }
                }
                let path = path.strip_prefix(repo()).unwrap().to_path_buf();
                if !path.starts_with("tests") {
                    inputs.insert(path);
                }
            }
        }
    }
    inputs
}

/// Whether a .dockerignore pattern (the forms used there) excludes `path`.
fn ignored_by(pattern: &str, path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    if let Some(rest) = pattern.strip_prefix("**/") {
        return match rest.strip_prefix('*') {
            Some(suffix) => name.ends_with(suffix),
            None => path.components().any(|c| c.as_os_str() == rest),
        };
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        assert!(!suffix.contains('*'), "unsupported pattern {pattern}");
        return path.components().count() == 1 && name.ends_with(suffix);
    }
    assert!(!pattern.contains('*'), "unsupported pattern {pattern}");
    path.starts_with(pattern)
}

#[test]
fn dockerfile_builds_locked_in_stages_and_runs_as_non_root_stint() {
    let text = read("deploy/Dockerfile");
    let stages = dockerfile_stages(&text);
    assert!(stages.len() >= 2, "multi-stage");
    let builder = &stages[0];
    let last = stages.last().unwrap();
    let runs = |stage: &[Instruction]| -> Vec<String> {
        stage
            .iter()
            .filter(|i| i.op == "RUN")
            .map(|i| i.args.clone())
            .collect()
    };
    assert!(
        runs(builder)
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "a locked release build"
    );
    // A dependency layer: built from the manifests before the sources are copied.
    let first_build = builder
        .iter()
        .position(|i| i.op == "RUN" && i.args.contains("cargo build"))
        .unwrap();
    let src_copy = builder
        .iter()
        .position(|i| i.op == "COPY" && copy_sources(&i.args).contains(&"src".to_string()))
        .expect("COPY src");
    assert!(
        first_build < src_copy,
        "dependencies are built in a layer of their own"
    );

    // Everything the release build reads is copied into the builder, and not ignored.
    let final_build = builder
        .iter()
        .rposition(|i| i.op == "RUN" && i.args.contains("cargo build"))
        .unwrap();
    let copied: Vec<String> = builder[..final_build]
        .iter()
        .filter(|i| i.op == "COPY")
        .flat_map(|i| copy_sources(&i.args))
        .collect();
    let mut needed = build_inputs();
    assert!(
        needed.contains(Path::new("deploy/stint.toml")),
        "{needed:?}"
    );
    for always in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "proto",
        "src",
        "client/Cargo.toml",
    ] {
        needed.insert(always.into());
    }
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    // The builder's toolchain is the one Cargo.toml promises (clippy holds std APIs to it).
    let msrv = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(
        text.contains(&format!("ARG RUST_VERSION={msrv}\n")),
        "the builder image is rust:{msrv}"
    );
    for bench in manifest["bench"].as_array().unwrap() {
        needed.insert(format!("benches/{}.rs", bench["name"].as_str().unwrap()).into());
    }
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for pattern in ["**/target", ".git"] {
        assert!(patterns.contains(&pattern), ".dockerignore: {pattern}");
    }
    for path in &needed {
        assert!(
            copied.iter().any(|c| path.starts_with(c)),
            "{}: not copied into the build stage",
            path.display()
        );
        let mut files = Vec::new();
        if repo().join(path).is_dir() {
            files_under(&repo().join(path), &mut files);
        } else {
            files.push(repo().join(path));
        }
        for file in files {
            let rel = file.strip_prefix(repo()).unwrap();
            for p in &patterns {
                assert!(
                    !ignored_by(p, rel),
                    "{}: excluded by .dockerignore {p}",
                    rel.display()
                );
            }
        }
    }

    // The runtime stage: non-root numeric user, `stint serve`, both ports.
    let get = |op: &str| -> Vec<&str> {
        last.iter()
            .filter(|i| i.op == op)
            .map(|i| i.args.as_str())
            .collect()
    };
    assert!(get("RUN").is_empty(), "no shell in the runtime image");
    let user = *get("USER").last().expect("USER in the final stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert_ne!(uid, 0, "non-root");
    assert_eq!(json_list(get("ENTRYPOINT")[0]), ["stint"]);
    let cmd = json_list(get("CMD")[0]);
    assert!(matches!(
        Cli::try_parse_from(["stint".to_string()].into_iter().chain(cmd)),
        Ok(Cli {
            command: Command::Serve(_),
            ..
        })
    ));
    let exposed: BTreeSet<u64> = get("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(exposed, BTreeSet::from([GRPC_PORT, OPS_PORT]));
    assert!(
        get("COPY")
            .iter()
            .any(|c| c.contains("--from=builder") && c.ends_with(" /usr/local/bin/stint")),
        "the binary on PATH"
    );
    // The directory compose mounts its key volume on belongs to the runtime user, so the
    // empty volume is writable by `stint init`.
    let compose = yaml_docs("deploy/compose.yaml");
    let key_mount = strings(&compose[0]["services"]["init"]["volumes"])[0].clone();
    let key_dir = key_mount.split(':').nth(1).unwrap();
    assert!(
        get("COPY")
            .iter()
            .any(|c| c.contains(&format!("--chown={user}")) && c.ends_with(&format!(" {key_dir}"))),
        "{key_dir} owned by {user}"
    );
}

// ---------------------------------------------------------------------------- systemd

#[test]
fn systemd_unit_verifies_and_runs_a_valid_command() {
    let unit = read("deploy/stint.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/stint"));
    let args: Vec<String> = words.map(String::from).collect();
    let cli = Cli::try_parse_from(std::iter::once("stint".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("ExecStart: {e}"));
    let Command::Serve(serve) = cli.command else {
        panic!("ExecStart runs `stint serve`");
    };
    assert_eq!(
        serve.server.config.as_deref(),
        Some(Path::new("/etc/stint/stint.toml")),
        "the file deploy/stint.toml is installed as"
    );

    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("deploy_files: SKIPPED systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stint.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/stint", BIN)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    // It reports unknown keys and bad values as warnings, with a zero exit.
    let complaints: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("stint.service"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );
}
